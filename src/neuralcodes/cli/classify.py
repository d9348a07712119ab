"""`neuralcodes train` and `neuralcodes evaluate`."""

from __future__ import annotations

import argparse

from rich.table import Table

from neuralcodes.cli.options import (
    absolute_data,
    add_checkpoint_option,
    add_classify_options,
    classify_config,
)
from neuralcodes.progress import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the course ConvNet with early stopping")
    p.add_argument(
        "--out", required=True, help="run folder to create (or to continue with --resume)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    add_classify_options(p)
    add_checkpoint_option(p)
    p.set_defaults(func=train_command)

    p = sub.add_parser("evaluate", help="cross-entropy, accuracy, top-5 on train/val/test")
    p.add_argument("run", help="run folder")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--data",
        default=None,
        help="the run's data, if it has moved (verified against the run's checksum)",
    )
    p.set_defaults(func=evaluate_command)


def train_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.train import train_classifier

    run = train_classifier(
        classify_config(args),
        args.out,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    run.finish()
    console.print(f"run folder: {run.root}")


def evaluate_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.evaluate import evaluate_run

    print_classification_table(
        evaluate_run(args.run, device=args.device, data=absolute_data(args.data))
    )


def print_classification_table(results: dict[str, dict[str, float]]) -> None:
    table = Table(title="Classification (best epoch, dropout off)")
    for column in ("split", "cross-entropy", "accuracy", "top-5"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(name, f"{r['loss']:.4f}", f"{r['accuracy']:.4f}", f"{r['top5']:.4f}")
    console.print(table)
