"""What re-ranking costs per query, as a ratio to the plain ranking measured in the same run.

    python benchmarks/bench_rerank.py                            # 5,000 held-out-sized codes; a 1M-code index
    python benchmarks/bench_rerank.py --n 300 --index-n 20000    # a quick check of the script

(a) leave-one-out over ``--n`` codes of ``--dim`` dimensions, the size of the held-out set (5,000 queries,
    every one against all others), each step of :mod:`neuralcodes.retrieval.rerank` at its defaults;
    the floor is the plain score matrix (one Gram product); ranking either costs the same afterwards.
(b) a ``--index-n``-code database (1,000,000 by default): exact search for each query's ``--shortlist``
    nearest, then :func:`~neuralcodes.retrieval.rerank.rerank_shortlist` re-orders them, as
    ``neuralcodes index search --rerank`` does; the floor is the search alone.
The codes are synthetic and clustered (``--classes`` centres), so the mAP column only shows that each
step runs on structured data, not what it gives on real codes (see docs/results/quality for that).
Run it on an idle machine: the ratios, not the absolute figures, carry over between machines.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from neuralcodes.device import describe_machine
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.neighbours import normalised, similarities
from neuralcodes.retrieval.rerank import RERANKERS, rerank, rerank_shortlist
from neuralcodes.retrieval.search import search


def clustered(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    codes = centres[labels] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return normalised(codes), labels


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201 - a stopwatch around any call
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def held_out(args: argparse.Namespace) -> dict:
    codes, labels = clustered(args.n, args.dim, args.classes, 0)
    # Every step ends in a (Q, N) score matrix that is ranked the same way afterwards: the floor is
    # the plain one (a Gram product), so the ratio is what the step itself costs.
    _, floor = timed(similarities, codes, codes, True)
    rows = {
        "plain": {
            "ms_per_query": 1000 * floor / args.n,
            "ratio": 1.0,
            "mAP": retrieval_metrics(codes, labels, ks=())["mAP"],
        }
    }
    for name in RERANKERS:
        scores, seconds = timed(rerank, name, codes, codes, loo=True)
        rows[name] = {
            "ms_per_query": 1000 * seconds / args.n,
            "ratio": seconds / floor,
            "mAP": retrieval_metrics(None, labels, ks=(), scores=scores)["mAP"],
        }
        print(
            f"  (a) {name:13s} {rows[name]['ms_per_query']:9.3f} ms/query  x{rows[name]['ratio']:8.1f}",
            flush=True,
        )
    return rows


def index(args: argparse.Namespace) -> dict:
    database, _ = clustered(args.index_n, args.index_dim, args.classes, 1)
    queries, _ = clustered(args.queries, args.index_dim, args.classes, 2)
    (ids, _), floor = timed(search, queries, database, args.shortlist)
    rows = {"search": {"ms_per_query": 1000 * floor / args.queries, "ratio": 1.0}}
    for name in RERANKERS:
        _, seconds = timed(rerank_shortlist, name, queries, ids, lambda i: database[i])
        rows[name] = {
            "ms_per_query": 1000 * seconds / args.queries,
            "ratio": (floor + seconds) / floor,
        }
        print(
            f"  (b) {name:13s} {rows[name]['ms_per_query']:9.3f} ms/query on top of the search, "
            f"x{rows[name]['ratio']:.2f} of it",
            flush=True,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--n",
        type=int,
        default=5000,
        help="codes of the leave-one-out set (the held-out set: 5,000)",
    )
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--index-n", type=int, default=1_000_000)
    p.add_argument("--index-dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=200, help="queries against the large database")
    p.add_argument(
        "--shortlist", type=int, default=100, help="results re-ranked per query (the index default)"
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    print(f"machine: {describe_machine()}")
    result = {
        "machine": describe_machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "held_out": held_out(args),
        "index": index(args),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("held_out", "index")}, indent=2))


if __name__ == "__main__":
    main()
