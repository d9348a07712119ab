"""`neuralcodes index build|merge|add|remove|info|backend` and `neuralcodes search`: an index of your own images."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from neuralcodes.progress import console

out = Console()  # results go to stdout (progress and messages to stderr), so they can be piped

BACKEND_CHOICES = ("auto", "exact", "flat", "hnsw", "ivfpq")
# The step names, without importing the library (and torch) before a command runs; a test keeps them equal.
RERANK_CHOICES = ("aqe", "alpha_qe", "dba", "dba+qe", "diffusion", "k_reciprocal")


def add_parser(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser(
        "index", help="build and maintain a searchable index of a folder of images"
    )
    steps = index.add_subparsers(dest="index_command", required=True, metavar="STEP")

    _add_build(steps)
    _add_maintenance(steps)
    _add_search(sub)


def _add_build(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "build", help="embed every image of a folder (or data source) into a new index (resumable)"
    )
    p.add_argument(
        "index", help="the index folder to create (run again to resume an interrupted build)"
    )
    p.add_argument(
        "--model",
        required=True,
        help="a `neuralcodes train` or `rank train` run folder, or a backbone: imagenet (EfficientNet-Lite0, "
        "pretrained, no training needed), efficientnet_lite0, resnet18/50/101",
    )
    p.add_argument(
        "--layer", default=None, help="layer of the codes (neural codes: L5, L6 or L7; default L6)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side images are resized to (backbones; default 224)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--images", help="a folder tree of images (labels from class sub-folders, if any)"
    )
    where.add_argument(
        "--data", help="a data source as `neuralcodes train --data` takes it (sample, a zip, ...)"
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="how the codes are stored",
    )
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="search backend (auto: exact up to 200,000 images, then FAISS HNSW, IVF-PQ past memory)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="embed only shard K of N (K = 1..N) into INDEX/shards/, one process each, on any machines "
        "sharing the folder; the last to finish merges them into the index",
    )
    _add_ingest_options(p)
    p.set_defaults(func=_build)


def _add_maintenance(steps: argparse._SubParsersAction) -> None:
    """merge, add, remove, info, backend: the steps on an index once built."""
    p = steps.add_parser(
        "merge", help="merge the finished shards of a `build --shard K/N` into the index"
    )
    p.add_argument("index")
    p.set_defaults(func=_merge)

    p = steps.add_parser(
        "add", help="add the images of a folder to an index (files already in it are skipped)"
    )
    p.add_argument("index")
    p.add_argument("images", nargs="?", help="a folder of images")
    p.add_argument("--data", help="a data source instead of a folder")
    _add_ingest_options(p)
    p.set_defaults(func=_add)

    p = steps.add_parser("remove", help="remove images from an index by file path")
    p.add_argument("index")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files (or their paths as `search` shows them)",
    )
    p.set_defaults(func=_remove)

    p = steps.add_parser("info", help="counts, model, layer, size on disk, backend")
    p.add_argument("index")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)

    p = steps.add_parser("backend", help="switch or rebuild the search backend of an index")
    p.add_argument("index")
    p.add_argument("name", choices=BACKEND_CHOICES)
    p.set_defaults(func=_backend)


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an index with image files")
    p.add_argument("index")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of tables")
    p.add_argument(
        "--figure", default=None, metavar="PNG", help="also draw the results into this PNG"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument(
        "--rerank",
        default=None,
        choices=RERANK_CHOICES,
        metavar="STEP",
        help="re-rank each query's shortlist with a step: "
        + ", ".join(RERANK_CHOICES)
        + " (distances stay the Euclidean ones, so they need not increase)",
    )
    p.add_argument(
        "--shortlist",
        type=int,
        default=100,
        metavar="N",
        help="nearest images the re-ranking re-orders (default 100; at least -k)",
    )
    p.set_defaults(func=_search)


def _add_ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-labels",
        dest="labels",
        action="store_false",
        help="do not take labels from sub-folder names",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument("--chunk", type=int, default=64, help="images per committed batch (default 64)")
    p.add_argument("--workers", type=int, default=None, help="threads reading and decoding images")


def _build(args: argparse.Namespace) -> None:
    from neuralcodes.index.ingest import build_index
    from neuralcodes.index.shard_build import build_shard

    options = dict(
        images=args.images,
        data=args.data,
        layer=args.layer,
        image_size=args.image_size,
        dtype=args.dtype,
        backend=args.backend,
        labels=args.labels,
        device=args.device,
        chunk=args.chunk,
        workers=args.workers,
    )  # the same for a shard as for a whole build
    if args.shard is not None:
        shard = build_shard(args.index, args.model, args.shard, **options)
        console.print(escape(shard.describe()), soft_wrap=True)
        return
    summary = build_index(args.index, args.model, **options)
    console.print(escape(summary.describe()), soft_wrap=True)


def _merge(args: argparse.Namespace) -> None:
    from neuralcodes.index.shards import merge_shards

    summary = merge_shards(args.index)
    console.print(
        escape(summary.describe())
        if summary
        else "another process merged the shards (or is merging them)",
        soft_wrap=True,
    )


def _add(args: argparse.Namespace) -> None:
    from neuralcodes.index.ingest import add_images

    if (args.images is None) == (
        args.data is None
    ):  # the library's message names `build`'s --images option
        raise ValueError(
            f"give the images to add as a folder (`neuralcodes index add {args.index} DIR`) or as a "
            "data source (--data SPEC), one of the two"
        )
    summary = add_images(
        args.index,
        images=args.images,
        data=args.data,
        labels=args.labels,
        device=args.device,
        chunk=args.chunk,
        workers=args.workers,
    )
    console.print(escape(summary.describe()), soft_wrap=True)


def _remove(args: argparse.Namespace) -> None:
    from neuralcodes.index.index import Index

    with Index.open(args.index) as index:
        ids = index.remove(args.paths)
        console.print(f"removed {len(ids)} image(s); {len(index):,} left")


def _info(args: argparse.Namespace) -> None:
    from neuralcodes.index.index import Index

    with Index.open(args.index) as index:
        info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if key == "size_bytes":
            key, value = "size on disk", f"{value / 2**20:,.1f} MiB"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            value = "; ".join(value)
        table.add_row(key.replace("_", " "), escape(str(value)))
    out.print(table)


def _backend(args: argparse.Namespace) -> None:
    from neuralcodes.index.backends import finish_backend
    from neuralcodes.index.store import Store

    store = Store.open(args.index)
    try:
        with store.lock():
            name = finish_backend(store, args.name)
    finally:
        store.close()
    console.print(f"backend: {name}")


def _search(args: argparse.Namespace) -> None:
    from pathlib import Path

    from neuralcodes.index.index import Index
    from neuralcodes.index.reranked import check_rerank

    check_rerank(args.rerank, args.shortlist, None)  # before the index opens and the model loads
    with Index.open(args.index, device=args.device) as index:
        pixels = [index.query_pixels(path) for path in args.images]
        results = index.search(pixels, args.k, rerank=args.rerank, shortlist=args.shortlist)
        if args.figure:
            from neuralcodes.index.figure import plot_search_results

            # A query that is itself in the index has a label: its results are framed same/other class.
            own = [index.find_bytes(Path(path).read_bytes()) for path in args.images]
            labels = [hit.label if hit is not None else None for hit in own]
            plot_search_results(index, pixels, args.images, results, args.figure, labels)
    if args.json:
        queries = [
            {
                "query": q,
                "results": [{"rank": r, **h.to_dict()} for r, h in enumerate(hits, start=1)],
            }
            for q, hits in zip(args.images, results.hits)
        ]
        json.dump(
            {
                "index": args.index,
                "k": args.k,
                "rerank": results.rerank,
                "shortlist": results.shortlist,
                "queries": queries,
            },
            sys.stdout,
            indent=2,
        )
        print()
        return
    if results.rerank:
        console.print(f"re-ranked with {results.rerank} among the {results.shortlist} nearest")
    for query, hits in zip(args.images, results.hits):
        table = Table(title=escape(query), title_justify="left")
        for column in ("rank", "distance", "path", "label"):
            table.add_column(column, justify="right" if column in ("rank", "distance") else "left")
        for rank, hit in enumerate(hits, start=1):
            table.add_row(
                str(rank), f"{hit.distance:.4f}", escape(hit.path), escape(hit.label or "")
            )
        out.print(table)
    if args.figure:
        console.print(f"figure: {escape(args.figure)}")
