"""Index backends at scale: exact vs FAISS flat, HNSW and IVF-PQ on 1,000,000 codes of 256 dimensions.

    python benchmarks/bench_index.py [--n 1000000] [--dim 256] [--queries 500] [--out docs/results/bench_index.json]

Synthetic clustered unit codes (2,000 Gaussian clusters) are written once to a memory-mapped file,
as an index holds them. Each backend is built in its own process and searched in another, so that
peak resident memory (ru_maxrss, which counts the memory-mapped codes a backend touches) belongs to
that backend alone. Measured, per backend: build time (FAISS: add, and IVF-PQ's training), queries
per second (batches of 100 queries) and the latency of one query, recall@10 against exact search,
peak memory of building and of searching, and the size of the saved FAISS file. Searches go through
the same path as ``Index.search``: candidates from the backend, re-ranked with the exact codes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from neuralcodes.index.backends import (
    backend_params,
    load_backend,
    new_backend,
    rank_candidates,
)

BACKENDS = ("exact", "flat", "hnsw", "ivfpq")
K = 10
# FAISS's OpenMP threads busy-wait by default: on a shared machine that multiplies build times (measured
# 8x for IVF-PQ on 2 busy cores). Passive waiting is the setting for machines that do other work too.
CHILD_ENV = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def make_codes(work: Path, n: int, dim: int, queries: int, kind: str, seed: int = 0) -> None:
    """Clustered unit codes in work/codes.bin (float32, row-major), held-out queries in work/queries.npy.

    ``latent``: 2,000 Gaussian clusters in a 32-dimensional space, mapped linearly to ``dim`` with a
    little isotropic noise: low intrinsic dimension, as CNN codes have. ``isotropic``: 2,000 clusters
    with strong noise in all ``dim`` dimensions: neighbours within a cluster are nearly equidistant,
    the hard case for approximate search.
    """
    stamp = work / "codes.json"
    wanted = {"n": n, "dim": dim, "queries": queries, "kind": kind, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return
    rng = np.random.default_rng(seed)
    latent = 32 if kind == "latent" else dim
    centres = rng.standard_normal((2000, latent)).astype(np.float32)
    mix = (
        (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
        if kind == "latent"
        else None
    )
    codes = np.memmap(work / "codes.bin", dtype=np.float32, mode="w+", shape=(n, dim))
    for start in range(0, n + queries, 100_000):
        stop = min(start + 100_000, n + queries)
        block = centres[rng.integers(0, len(centres), stop - start)]
        if mix is not None:
            block = (block + 0.5 * rng.standard_normal(block.shape).astype(np.float32)) @ mix
            block += 0.05 * rng.standard_normal(block.shape).astype(np.float32)
        else:
            block = block + 0.6 * rng.standard_normal(block.shape).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        if start < n:
            codes[start : min(stop, n)] = block[: min(stop, n) - start]
        if stop > n:
            np.save(work / "queries.npy", block[max(0, n - start) :])
    codes.flush()
    stamp.write_text(json.dumps(wanted))


def _codes(work: Path, n: int, dim: int) -> np.ndarray:
    return np.memmap(work / "codes.bin", dtype=np.float32, mode="r", shape=(n, dim))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Memory:
    """Peak memory of a phase above the process's own: anonymous (what the backend holds: FAISS
    structures, copies) sampled every 10 ms, and resident (VmHWM after a reset: memory-mapped codes
    read, which the kernel can drop again, included)."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (Linux)
        except OSError:
            pass
        self.base_anon, self.base_rss = _status_mib("RssAnon"), _status_mib("VmRSS")
        self.peak_anon = self.base_anon
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_anon = max(self.peak_anon, _status_mib("RssAnon"))

    def result(self, prefix: str) -> dict:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, _status_mib("RssAnon"))
        return {
            f"{prefix}_anon_mib": self.peak_anon - self.base_anon,
            f"{prefix}_rss_mib": _status_mib("VmHWM") - self.base_rss,
        }


def build_phase(work: Path, name: str, n: int, dim: int) -> dict:
    memory = (
        Memory()
    )  # from here: the interpreter with numpy, torch and faiss loaded, before any codes
    codes = _codes(work, n, dim)
    backend = new_backend(name, backend_params(name, n, dim))
    start = time.perf_counter()
    backend.sync(codes)
    seconds = time.perf_counter() - start
    file = work / f"{name}.index"
    backend.save(file)
    return {
        "build_s": seconds,
        **memory.result("build"),
        "params": backend.params,
        "file_mib": file.stat().st_size / 2**20 if file.exists() else 0.0,
    }


def search_phase(work: Path, name: str, n: int, dim: int) -> dict:
    memory = Memory()
    codes = _codes(work, n, dim)
    queries = np.load(work / "queries.npy")
    backend = load_backend(name, backend_params(name, n, dim), work / f"{name}.index")
    live = np.ones(n, dtype=bool)

    def run(batch: np.ndarray) -> np.ndarray:
        return rank_candidates(codes, batch, backend.candidates(codes, batch, K), live, K)[0]

    run(queries[:10])  # warm up: first touches of the files and caches
    start = time.perf_counter()
    ids = np.concatenate([run(queries[i : i + 100]) for i in range(0, len(queries), 100)])
    batch_s = time.perf_counter() - start
    singles = []
    for q in queries[:50]:
        start = time.perf_counter()
        run(q[None])
        singles.append(time.perf_counter() - start)
    np.save(work / f"{name}_ids.npy", ids)
    return {
        "qps": len(queries) / batch_s,
        "latency_ms_p50": 1000 * float(np.median(singles)),
        **memory.result("search"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--work",
        default="/tmp/neuralcodes-bench-index",
        help="scratch folder (about n x dim x 4 bytes)",
    )
    parser.add_argument("--out", default="docs/results/bench_index.json")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--codes",
        choices=["latent", "isotropic"],
        default="latent",
        help="synthetic code distribution",
    )
    parser.add_argument("--phase", choices=["build", "search"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.phase:  # a child process: one phase of one backend, one JSON line out
        phase = build_phase if args.phase == "build" else search_phase
        print(json.dumps(phase(work, args.backend, args.n, args.dim)))
        return

    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    make_codes(work, args.n, args.dim, args.queries, args.codes)
    print(f"codes: {args.n:,} x {args.dim} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = {}
    for name in args.backends.split(","):
        row = {}
        for phase in ("build", "search"):
            child = [
                sys.executable,
                __file__,
                "--phase",
                phase,
                "--backend",
                name,
                "--n",
                str(args.n),
                "--dim",
                str(args.dim),
                "--work",
                str(work),
            ]
            done = subprocess.run(child, check=True, capture_output=True, text=True, env=CHILD_ENV)
            row.update(json.loads(done.stdout.splitlines()[-1]))
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    truth = np.load(work / "exact_ids.npy")
    for name, row in rows.items():
        ids = np.load(work / f"{name}_ids.npy")
        row["recall_at_10"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)]))
    result = {
        "n": args.n,
        "dim": args.dim,
        "codes": args.codes,
        "queries": args.queries,
        "k": K,
        "machine": _machine(),
        "environment": {k: CHILD_ENV[k] for k in ("OMP_WAIT_POLICY",)},
        "backends": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(result: dict) -> str:
    lines = [
        "| backend | build (s) | queries/s (batch 100) | latency 1 query (ms) | recall@10 "
        "| memory build / search (MiB) | resident incl. mapped codes (MiB) | FAISS file (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["backends"].items():
        lines.append(
            f"| {name} | {r['build_s']:.1f} | {r['qps']:,.0f} | {r['latency_ms_p50']:.1f} | {r['recall_at_10']:.3f} "
            f"| {r['build_anon_mib']:,.0f} / {r['search_anon_mib']:,.0f} "
            f"| {r['build_rss_mib']:,.0f} / {r['search_rss_mib']:,.0f} | {r['file_mib']:,.0f} |"
        )
    return "\n".join(lines) + (
        "\n\nMemory: peak above the process's own (Python, torch, faiss). The first figure is memory the backend holds;"
        " the second adds the pages of the memory-mapped codes it read, which the kernel can drop again."
    )


def _machine() -> str:
    import faiss

    return f"{platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, python {platform.python_version()}"


if __name__ == "__main__":
    main()
