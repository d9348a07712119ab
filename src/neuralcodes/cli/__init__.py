"""The command line: a thin layer over the library. Each sub-module registers its commands.

    neuralcodes run        the whole course protocol: data -> train -> evaluate -> codes -> mAP -> PCA -> report
    neuralcodes train      train the ConvNet (early stopping, --resume)
    neuralcodes evaluate   classification metrics of a run on train/val/test
    neuralcodes retrieve   neural codes, mAP per layer, figures and the PCA study of a run
    neuralcodes report     write the run's report (Markdown + HTML)
    neuralcodes rank       deep ranking: rank train / rank evaluate
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from rich.markup import escape

from neuralcodes.progress import console

# Modules that contribute commands; each defines add_parser(subparsers).
COMMAND_MODULES = ("classify", "pipeline", "rank")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuralcodes", description="Image retrieval with neural codes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        # Our own errors say what is wrong and what to do; a traceback would only hide that.
        console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: the last checkpoint is intact; continue with --resume")
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
