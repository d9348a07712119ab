"""`neuralcodes data SOURCE`: what a data source holds, with its checksum; `--verify` checks every cached byte."""

from __future__ import annotations

import argparse

from neuralcodes.cli.options import absolute_data
from neuralcodes.progress import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="load a data source (decoding it into the cache once) and say what it holds"
    )
    p.add_argument(
        "source", nargs="?", default=None, help="as --data takes it (default: the embedded sample)"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="hash every byte of the cache (otherwise a sample of rows)",
    )
    p.add_argument(
        "--skip-corrupt", action="store_true", help="leave out unreadable files (listed below)"
    )
    p.set_defaults(func=data_command)


def data_command(args: argparse.Namespace) -> None:
    from neuralcodes.data.sources import load_dataset

    dataset = load_dataset(
        absolute_data(args.source), skip_corrupt=args.skip_corrupt, verify=args.verify
    )
    lines = [
        f"{dataset.name}: {dataset.location}",
        f"  sha256 {dataset.checksum}",
        f"  {len(dataset.train):,} labelled images of {dataset.train.num_classes} classes"
        + (f"; {len(dataset.val):,} official validation images" if dataset.val is not None else ""),
        f"  cache {'verified byte for byte' if args.verify else 'checked (sampled rows)'}",
    ]
    lines += [f"  skipped: {path}: {reason}" for path, reason in dataset.skipped]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
