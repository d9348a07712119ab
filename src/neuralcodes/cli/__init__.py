"""The command line: a thin layer over the library. Each sub-module registers its commands.

neuralcodes run        the whole course protocol: data -> train -> evaluate -> codes -> mAP -> PCA -> report
neuralcodes train      train the ConvNet (early stopping, --resume)
neuralcodes evaluate   classification metrics of a run on train/val/test
neuralcodes retrieve   neural codes, mAP per layer, figures and the PCA study of a run
neuralcodes report     write the run's report (Markdown + HTML)
neuralcodes rank       deep ranking: rank train / rank evaluate
neuralcodes tuned      retrieval-tuned codes: tuned classifier / train / compare / report
neuralcodes index      build / add / remove / info / backend: a searchable index of your own images
neuralcodes search     search an index with image files (tables, JSON, a figure)
neuralcodes serve      the search page and JSON API of an index (FastAPI + uvicorn)
neuralcodes data       what a data source holds (checksum, counts, skipped files); --verify checks the cache
neuralcodes status     where a run stands (stage, epoch, batch, rate, ETA); `clean` frees a finished run's disk
"""

from __future__ import annotations

import argparse
import errno
import importlib
import shlex
import sys
from typing import Sequence

from rich.markup import escape

from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.progress import console
from neuralcodes.runs import RunBusyError

# Which module registers each command, so that a command imports only its own module: `status`, polled from a
# shell while a run trains, then starts in a fraction of a second instead of importing torch and
# pytorch-metric-learning for the choices of `rank` and `tuned`. tests/cli checks it against the modules.
COMMANDS = {
    "train": "classify",
    "evaluate": "classify",
    "run": "pipeline",
    "retrieve": "pipeline",
    "report": "pipeline",
    "quality": "pipeline",
    "rank": "rank",
    "tuned": "tuned",
    "status": "status",
    "clean": "status",
    "data": "data",
    "index": "index",
    "search": "index",
    "serve": "serve",
}
# Modules that contribute commands; each defines add_parser(subparsers).
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only the one ``argv`` names (the full parser for help and unknown commands)."""
    parser = argparse.ArgumentParser(
        prog="neuralcodes", description="Image retrieval with neural codes."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    first = argv[0] if argv else None
    for name in (COMMANDS[first],) if first in COMMANDS else COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        result = args.func(args)
    except TrainingInterrupted as exc:
        console.print(f"{exc}\ncontinue with: {resume_command(argv)}", markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print(
            "interrupted: what was finished (checkpoints, stages, caches) is kept; "
            f"continue with: {resume_command(argv)}",
            markup=False,
            soft_wrap=True,
        )
        return 130
    except (FileExistsError, NotADirectoryError) as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTDIR) and exc.filename:
            # The OS's own words ("[Errno 17] File exists") for a file standing where a folder must be made.
            return _error(
                f"{exc.filename}: a file is in the way where a folder is needed (at that path or above "
                "it); choose another folder, or move the file"
            )
        return _error(str(exc))
    except (ValueError, FileNotFoundError, RunBusyError) as exc:
        # Our own errors say what is wrong and what to do; a traceback would only hide that.
        return _error(str(exc))
    except PermissionError as exc:
        return _error(
            f"permission denied: {exc.filename or exc}; fix the permissions or choose another folder"
        )
    except OSError as exc:  # disk full, symlink loops, ... : name the file at least
        where = f" ({exc.filename})" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}")
    return int(result or 0)


def _error(message: str) -> int:
    console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    return 2


def resume_command(argv: Sequence[str] | None) -> str:
    """The command line that continues this one."""
    words = list(sys.argv[1:] if argv is None else argv)
    resumable = words[:1] in (["run"], ["train"]) or words[:2] in (
        ["rank", "train"],
        ["tuned", "train"],
        ["tuned", "classifier"],
    )
    if resumable and "--resume" not in words:
        words.append("--resume")
    return "neuralcodes " + " ".join(shlex.quote(w) for w in words)


if __name__ == "__main__":
    sys.exit(main())
