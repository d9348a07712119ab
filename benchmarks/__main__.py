"""``python -m benchmarks``: this project against the reference Keras implementation, on this machine, in one run.

    python -m benchmarks                          # everything: train, loop, epoch, infer, map
    python -m benchmarks --sections train,infer   # only some sections
    python -m benchmarks --quick                  # tiny sizes: checks the harness in a few seconds

Measures, each figure in a fresh process and side by side:
  train  training throughput of the course ConvNet (forward + backward + Adam amsgrad, batch 100):
         Keras 3 on TensorFlow (fp32) against this project's bare step (channels-last, bf16 autocast / fp32);
  loop   this project's real loop (step + run_epoch: batches from uint8, bookkeeping, progress), with and
         without augmentation;
  epoch  a whole epoch of train_classifier (validation, checkpoints and history included);
  infer  L2-normalised L5/L6/L7 codes at batch 500, the same two implementations;
  map    leave-one-out mAP over 5,000 codes of 16,384 dims: the reference notebook's procedure
         (scikit-learn NearestNeighbors + per-query AP loop), this project, the floor (one product + one sort).
Prints a table (ratios beside absolute figures) and writes it as JSON (and Markdown with --markdown).

TensorFlow is a benchmark-only extra: pip install -e ".[bench]". Without it the Keras column is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from benchmarks.reference_keras import tensorflow_missing

SECTIONS = ("train", "loop", "epoch", "infer", "map")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--batch", type=int, default=100, help="training batch size (default 100, the course's)"
    )
    p.add_argument(
        "--steps", type=int, default=8, help="timed training steps per measurement (after --warmup)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed steps first (tracing, allocator, kernel choice)",
    )
    p.add_argument(
        "--epoch-images",
        type=int,
        default=1000,
        help="images of the synthetic set of the 'epoch' row",
    )
    p.add_argument("--infer-batch", type=int, default=500)
    p.add_argument(
        "--infer-batches",
        type=int,
        default=2,
        help="timed inference batches (after one warm-up batch)",
    )
    p.add_argument("--map-n", type=int, default=5000)
    p.add_argument("--map-dim", type=int, default=16384)
    p.add_argument("--map-classes", type=int, default=10)
    p.add_argument(
        "--repeat", type=int, default=2, help="runs per row, interleaved; the best counts"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="compute threads for both libraries (default: theirs)",
    )
    p.add_argument(
        "--no-keras",
        action="store_true",
        help="skip the Keras column even when TensorFlow is installed",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes (1 step, batch 4, 60 codes): a smoke run"
    )
    p.add_argument(
        "--in-process", action="store_true", help=argparse.SUPPRESS
    )  # the smoke test: no subprocesses
    p.add_argument(
        "--json",
        type=Path,
        default=Path("bench.json"),
        help="where to write the results (default bench.json)",
    )
    p.add_argument(
        "--markdown", type=Path, default=None, help="also write the table as Markdown here"
    )
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.quick:
        args.batch, args.steps, args.warmup, args.epoch_images, args.repeat = 4, 1, 1, 400, 1
        args.infer_batch, args.infer_batches, args.map_n, args.map_dim = 8, 1, 60, 32
    for name in ("batch", "steps", "infer_batch", "infer_batches", "repeat", "epoch_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.map_n < 2 * args.map_classes:
        p.error("--map-n must be at least twice --map-classes (two codes per class)")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = "--no-keras given" if args.no_keras else tensorflow_missing()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result: dict[str, Any] = {
        "command": "python -m benchmarks",
        "settings": settings,
        "machine": harness.machine(),
        "keras_skipped": missing,
        "load_average": {"start": os.getloadavg()},
    }
    if not missing:
        from benchmarks.reference_keras import versions

        result["machine"].update(versions())
    print(
        report.preamble(
            {**result, "load_average": {**result["load_average"], "end": os.getloadavg()}}
        ),
        flush=True,
    )
    start = time.perf_counter()
    rows = harness.plan(args, missing)
    harness.measure(
        rows, args.repeat, args.threads, args.in_process, log=lambda line: print(line, flush=True)
    )
    for section in ("train", "infer"):
        if any(r.section == section for r in rows):
            result[section] = [r.to_json() for r in rows if r.section == section]
    if "map" in args.sections:
        result["map"] = harness.measure_map(
            args, args.in_process, log=lambda line: print(line, flush=True)
        )
    result["load_average"]["end"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - start
    result["ratios"] = report.ratios(result)
    result["goals"] = report.goals(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run(args)
    print()
    print(report.preamble(result))
    print(report.table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.json}")
    if args.markdown:
        args.markdown.write_text(
            report.preamble(result) + "\n" + report.table(result, markdown=True)
        )
        print(f"written: {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
