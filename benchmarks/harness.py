"""Runs every measurement of ``python -m benchmarks`` in its own process and gathers the figures.

Rows are measured ``repeat`` times, interleaved (Keras, ours, Keras, ours, ...) so a burst of load from
other processes hits both sides alike; the best of a row's runs counts (the least disturbed one) and
every run is kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the table: a task of benchmarks.worker with its keyword arguments."""

    section: str  # train | infer
    key: str
    label: str
    task: str
    kwargs: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        return max(self.samples, key=lambda s: s["images_per_s"]) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "key": self.key,
            "label": self.label,
            "task": self.task,
            "kwargs": self.kwargs,
            "skipped": self.skipped,
            "images_per_s": best["images_per_s"] if best else None,
            "images_per_cpu_s": best["images_per_s"] * best["seconds"] / best["cpu_seconds"]
            if best
            else None,
            "best": best,
            "samples": self.samples,
        }


def run_worker(
    task: str, kwargs: dict[str, Any], threads: int | None, in_process: bool = False
) -> dict[str, Any]:
    """One measurement in a fresh Python process (repo root on the path); its JSON result.

    ``in_process``: in this process instead (no isolation, no thread setting): for the smoke test. Keras
    rows always get their own process: PyTorch training after TensorFlow's in one process segfaults here.
    """
    if in_process and not task.startswith("keras_"):
        from benchmarks import worker

        return json.loads(json.dumps(worker.task(task)(**kwargs)))
    env = {**os.environ, "NEURALCODES_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    payload = {**kwargs, **({"threads": threads} if threads else {})}
    command = [sys.executable, "-m", "benchmarks.worker", task, json.dumps(payload)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"benchmark task {task} {payload} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def plan(args: argparse.Namespace, keras_missing: str | None) -> list[Row]:
    """The rows asked for by ``args.sections`` (train, loop, epoch, infer)."""
    b, s, w = args.batch, args.steps, args.warmup
    rows: list[Row] = []
    if "train" in args.sections:
        rows += [
            Row(
                "train",
                "keras",
                "Keras 3 / TensorFlow, fp32 (reference)",
                "keras_train",
                {"steps": s, "batch": b, "warmup": w},
            ),
            Row(
                "train",
                "ours_step_bf16",
                "ours, bare step, channels-last + bf16 (default)",
                "ours_train_step",
                {"steps": s, "batch": b, "warmup": w, "bf16": True},
            ),
            Row(
                "train",
                "ours_step_fp32",
                "ours, bare step, channels-last fp32",
                "ours_train_step",
                {"steps": s, "batch": b, "warmup": w, "bf16": False},
            ),
            Row(
                "train",
                "ours_step_fused",
                "ours, bare step, bf16 + fused Adam (not the recipe's optimiser)",
                "ours_train_step",
                {"steps": s, "batch": b, "warmup": w, "fused_adam": True},
            ),
        ]
    if "loop" in args.sections:
        rows += [
            Row(
                "train",
                "ours_loop",
                "ours, real loop (step + run_epoch), bf16",
                "ours_train_loop",
                {"steps": s, "batch": b, "warmup": w},
            ),
            Row(
                "train",
                "ours_loop_augment",
                "ours, real loop + augmentation",
                "ours_train_loop",
                {"steps": s, "batch": b, "warmup": w, "augment": True},
            ),
            Row(
                "train",
                "ours_loop_bar",
                "ours, real loop + live progress bar (as in a terminal)",
                "ours_train_loop",
                {"steps": s, "batch": b, "warmup": w, "live_progress": True},
            ),
        ]
    if "epoch" in args.sections:
        rows.append(
            Row(
                "train",
                "ours_epoch",
                "ours, whole epoch (train_classifier: + validation, checkpoints)",
                "ours_whole_epoch",
                {"images": args.epoch_images, "batch": b},
            )
        )
    if "infer" in args.sections:
        ib, n = args.infer_batch, args.infer_batches
        rows += [
            Row(
                "infer",
                "keras",
                "Keras 3 / TensorFlow, fp32 (reference)",
                "keras_infer",
                {"batches": n, "batch": ib},
            ),
            Row(
                "infer",
                "ours_bf16",
                "ours, extract_codes, channels-last + bf16 (default)",
                "ours_infer",
                {"batches": n, "batch": ib, "bf16": True},
            ),
            Row(
                "infer",
                "ours_fp32",
                "ours, extract_codes, channels-last fp32",
                "ours_infer",
                {"batches": n, "batch": ib, "bf16": False},
            ),
        ]
    for row in rows:
        if row.task.startswith("keras_") and keras_missing:
            row.skipped = keras_missing
    return rows


def measure(
    rows: list[Row], repeat: int, threads: int | None, in_process: bool = False, log: Any = print
) -> None:
    for r in range(repeat):
        for row in rows:
            if row.skipped:
                continue
            log(f"  [{r + 1}/{repeat}] {row.section}: {row.label} ...")
            row.samples.append(run_worker(row.task, row.kwargs, threads, in_process))
            log(
                f"      {row.samples[-1]['images_per_s']:.1f} images/s (load {os.getloadavg()[0]:.1f})"
            )


def _map_in_process(method: str, ns: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import bench_map
    from benchmarks.timing import Clock

    codes, labels = bench_map.make_codes(ns.n, ns.dim, ns.classes, ns.spread, ns.seed)
    run = {
        "a": bench_map.run_reference,
        "b": lambda c, y: bench_map.run_ours(c, y, None),
        "c": bench_map.run_floor,
    }
    with Clock() as clock:
        ap = run[method](codes, labels)
    return {"seconds": clock.seconds, "peak_mib": None, "peak_reset": False, "ap": ap}


def measure_map(
    args: argparse.Namespace, in_process: bool = False, log: Any = print
) -> list[dict[str, Any]]:
    """The three leave-one-out mAP procedures of bench_map.py, each in its own process, fastest of ``repeat``."""
    from benchmarks import bench_map

    ns = argparse.Namespace(
        n=args.map_n,
        dim=args.map_dim,
        classes=args.map_classes,
        spread=8.0,
        seed=0,
        block_size=None,
    )
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for method in "abc":
                log(f"  [{r + 1}/{args.repeat}] mAP: {bench_map.METHODS[method]} ...")
                if in_process:
                    result = _map_in_process(method, ns)
                else:
                    result = bench_map.run_in_subprocess(method, ns, Path(tmp) / f"{method}.npy")
                log(f"      {result['seconds']:.2f} s")
                if method not in best or result["seconds"] < best[method]["seconds"]:
                    best[method] = result
    reference = best["a"]["seconds"]
    out = []
    for method, key in zip("abc", ("reference", "ours", "floor"), strict=True):
        result = best[method]
        ap = result.pop("ap")
        out.append(
            {
                "key": key,
                "label": bench_map.METHODS[method],
                **result,
                "speedup_vs_reference": reference / result["seconds"],
                "mAP": None if np.isnan(ap).all() else float(ap.mean()),
            }
        )
    out[1]["mAP_difference_vs_reference"] = abs(out[1]["mAP"] - out[0]["mAP"])
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "bf16_cpu": torch.backends.mkldnn.is_available() and "avx512_bf16" in _cpu_flags(),
    }


def _cpu_flags() -> str:
    try:
        return next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return ""
