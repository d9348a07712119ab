"""Options shared by several commands."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from neuralcodes import io
from neuralcodes.recipes.neural_codes.config import ClassifyConfig

SAMPLE_EPOCHS = 10
NAMED_SOURCES = ("sample", "tiny-imagenet")


def absolute_data(spec: str | None) -> str | None:
    """A ``--data`` path made absolute (runs record where their data is, whatever the working directory)."""
    if spec is None or spec in NAMED_SOURCES or "://" in spec:
        return spec
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data {spec}: no such file or folder ({_EXPECTED_DATA})")
    return str(path.resolve())


_EXPECTED_DATA = "expected a Tiny ImageNet zip or folder, a folder with one sub-folder of images per class, 'sample' or 'tiny-imagenet'"


def add_checkpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=5.0,
        help="write a checkpoint this often inside an epoch (default 5; also on Ctrl-C / SIGTERM)",
    )


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        help="images: omitted = the embedded sample; 'tiny-imagenet' = download the official archive; "
        "or a path to a Tiny ImageNet zip/folder or a class-per-folder image collection",
    )
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable images (counted in the log)"
    )


def add_classify_options(parser: argparse.ArgumentParser) -> None:
    """One option per ClassifyConfig field, defaults from the dataclass."""
    add_data_option(parser)
    d = ClassifyConfig()
    _add_training_options(parser, d)
    _add_split_options(parser, d)
    _add_optimiser_options(parser, d)
    _add_selection_options(parser, d)
    parser.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="plain fp32 instead of bf16 autocast"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)"
    )


def _add_training_options(parser: argparse.ArgumentParser, d: ClassifyConfig) -> None:
    """How long and on what the ConvNet trains: epochs, batch, learning rate, patience, regularisation."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"at most this many epochs (default {d.epochs}; {SAMPLE_EPOCHS} on the embedded sample, "
        "so the demo takes minutes; with --resume: the run's own, and a larger number trains it on)",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="epochs without improvement before stopping",
    )
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument(
        "--augment", action="store_true", help="random crop (pad 4) + horizontal flip"
    )
    parser.add_argument(
        "--batch-norm", action="store_true", help="the batch-norm variant of the ConvNet"
    )
    parser.add_argument("--dropout", type=float, default=d.dropout)


def _add_split_options(parser: argparse.ArgumentParser, d: ClassifyConfig) -> None:
    """The seeds, and the classes held out for retrieval."""
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="weights, shuffling, dropout, augmentation"
    )
    parser.add_argument(
        "--split-seed", type=int, default=d.split_seed, help="the course split's seed"
    )
    parser.add_argument(
        "--n-ood",
        type=int,
        default=None,
        help=f"classes held out for retrieval: the last N in sorted order (default {d.n_ood})",
    )
    parser.add_argument(
        "--ood-classes",
        default=None,
        help="comma-separated held-out classes by folder name, wnid or class name (instead of the last --n-ood)",
    )


def _add_optimiser_options(parser: argparse.ArgumentParser, d: ClassifyConfig) -> None:
    """The optimiser, its learning-rate schedule and the loss's label smoothing."""
    parser.add_argument(
        "--optimizer",
        default=d.optimizer,
        help=f"adam_amsgrad (the course's), adam, adamw, sgd (momentum 0.9); default {d.optimizer}",
    )
    parser.add_argument(
        "--schedule",
        default=d.schedule,
        help="learning rate: constant (default) or cosine (to 0 at --epochs)",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=d.warmup_epochs,
        help="linear warm-up of the learning rate (epochs, may be a fraction)",
    )
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)


def _add_selection_options(parser: argparse.ArgumentParser, d: ClassifyConfig) -> None:
    """Class-disjoint validation: the classes, their images and the code that picks the best epoch."""
    parser.add_argument(
        "--n-val-classes",
        type=int,
        default=d.n_val_classes,
        help="in-domain classes never trained on, whose leave-one-out mAP picks the best epoch (class-disjoint validation; default 0: validation loss picks)",
    )
    parser.add_argument(
        "--val-class-images",
        type=int,
        default=d.val_class_images,
        help=f"images a class-disjoint validation class scores (default {d.val_class_images})",
    )
    parser.add_argument(
        "--select-layer",
        default=d.select_layer,
        help=f"the code whose class-disjoint mAP picks the epoch (default {d.select_layer})",
    )


def resumed_config(args: argparse.Namespace) -> dict[str, Any]:
    """With ``--resume``, the run's own config.json (so an option left out means the run's value, not the
    default); otherwise, or for a run not started yet, nothing."""
    out = getattr(args, "out", None)
    if not getattr(args, "resume", False) or out is None:
        return {}
    path = Path(out).expanduser() / "config.json"
    return io.read_json(path) if path.exists() else {}


def classify_config(
    args: argparse.Namespace, kind: type[ClassifyConfig] = ClassifyConfig
) -> ClassifyConfig:
    """The config of a classification run (``kind``: ClassifyConfig or a subclass) from its options."""
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(kind) if hasattr(args, f.name)
    }
    if values.get("epochs") is None:
        default = SAMPLE_EPOCHS if values.get("data") is None else kind.epochs
        values["epochs"] = resumed_config(args).get("epochs", default)
    values["data"] = absolute_data(values.get("data"))
    if getattr(args, "ood_classes", None):
        values["ood_classes"] = [c.strip() for c in args.ood_classes.split(",") if c.strip()]
        values["n_ood"] = values.get("n_ood") or len(values["ood_classes"])
    if values.get("n_ood") is None:
        values.pop("n_ood", None)
    check_checkpoint_minutes(args)
    return kind(**values).validate()


def check_checkpoint_minutes(args: argparse.Namespace) -> None:
    """Positive, and a number: nan passes `<= 0` and would never checkpoint inside an epoch."""
    minutes = getattr(args, "checkpoint_minutes", 1.0)
    if not minutes > 0:
        raise ValueError(f"--checkpoint-minutes must be positive, got {minutes}")
