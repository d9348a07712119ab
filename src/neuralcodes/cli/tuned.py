"""`neuralcodes tuned`: retrieval-tuned codes (classifier / train / compare / report)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from neuralcodes.cli.options import (
    absolute_data,
    add_checkpoint_option,
    add_classify_options,
    check_checkpoint_minutes,
    classify_config,
    resumed_config,
)
from neuralcodes.layers.pooling import POOLINGS
from neuralcodes.models.resnet import ARCHS
from neuralcodes.progress import console
from neuralcodes.recipes.tuned_codes.config import (
    LOSSES,
    MININGS,
    PRETRAINED_BASES,
    WHITENINGS,
    TunedConfig,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    tuned = subparsers.add_parser(
        "tuned", help="retrieval-tuned codes: GeM, whitening, triplet fine-tuning (cirtorch)"
    )
    sub = tuned.add_subparsers(dest="tuned_command", required=True, metavar="STEP")

    _add_classifier(sub)
    _add_train(sub)
    _add_compare(sub)
    _add_report(sub)


def _add_classifier(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classifier",
        help="train a 64x64 ResNet-18 classifier of the in-domain classes from scratch",
    )
    p.add_argument(
        "--out", required=True, help="run folder to create (or to continue with --resume)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--arch", default="resnet18", choices=ARCHS)
    add_classify_options(p)
    p.set_defaults(lr=1e-3, patience=2, augment=True, select_layer="pool")
    p.add_argument(
        "--no-augment", dest="augment", action="store_false", help="no random crop + flip"
    )
    add_checkpoint_option(p)
    p.set_defaults(func=_classifier)


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TunedConfig()
    t = sub.add_parser(
        "train", help="fine-tune a classifier's conv map with GeM + a metric-learning loss"
    )
    t.add_argument(
        "--base",
        required=True,
        help="classifier run folder (`neuralcodes train` or `tuned classifier`), "
        "or efficientnet_lite0 (ImageNet weights)",
    )
    t.add_argument(
        "--out", required=True, help="run folder to create (or to continue with --resume)"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    t.add_argument(
        "--data",
        default=None,
        help="the base's data if it has moved (a pretrained base: the images)",
    )
    _add_fine_tuning_options(t, d)
    _add_training_options(t, d)
    t.set_defaults(func=_train)


def _add_fine_tuning_options(t: argparse.ArgumentParser, d: TunedConfig) -> None:
    """What `tuned train` fine-tunes and how: pooling, whitening, loss, mining, augmentation."""
    t.add_argument("--pooling", default=d.pooling, choices=POOLINGS)
    t.add_argument("--fixed-p", dest="learn_p", action="store_false", help="keep GeM's p fixed")
    t.add_argument(
        "--whitening",
        default=d.whitening,
        choices=WHITENINGS,
        help="a whitening layer after pooling",
    )
    t.add_argument("--loss", default=d.loss, choices=LOSSES)
    t.add_argument(
        "--mining",
        default=d.mining,
        choices=MININGS,
        help="all: every triplet of the batch that violates the margin (default); semihard / hard: "
        "only those pytorch-metric-learning's TripletMarginMiner picks",
    )
    t.add_argument(
        "--margin", type=float, default=None, help="default 0.1 (triplet) / 0.7 (contrastive)"
    )
    t.add_argument("--whiten-dim", type=int, default=None)
    t.add_argument(
        "--augment",
        action="store_true",
        help="random resized crop, flip, rotation, tilt, colour jitter",
    )
    t.add_argument(
        "--train-bn",
        dest="freeze_bn",
        action="store_false",
        help="update batch-norm statistics too",
    )
    t.add_argument(
        "--ood-classes", default=None, help="pretrained base only: comma-separated held-out classes"
    )


def _add_training_options(t: argparse.ArgumentParser, d: TunedConfig) -> None:
    """The numbers of `tuned train` (defaults from :class:`TunedConfig`), epochs, precision, device."""
    for name in ("p", "lr", "weight_decay"):
        t.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    for name in (
        "m_per_class",
        "batch_size",
        "batches_per_epoch",
        "patience",
        "val_images",
        "whiten_images",
        "eval_batch_size",
        "image_size",
        "seed",
        "split_seed",
        "n_ood",
    ):
        t.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"at most this many epochs (default {d.epochs}); with --resume, a larger number trains a run "
        "that is still improving for longer (omitted: the run's own)",
    )
    t.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast"
    )
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    add_checkpoint_option(t)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compare", help="every variant on the held-out protocol: one table, t-SNE, paired interval"
    )
    c.add_argument(
        "--base",
        required=True,
        help="the `neuralcodes train` run whose classification codes are the baseline",
    )
    c.add_argument(
        "--out", required=True, help="folder for comparison.json, figures and report.md/html"
    )
    c.add_argument(
        "--tuned", nargs="*", default=[], help="fine-tuning runs (`neuralcodes tuned train`)"
    )
    c.add_argument(
        "--classifiers",
        nargs="*",
        default=[],
        help="ResNet-18 classifier runs (`neuralcodes tuned classifier`)",
    )
    c.add_argument(
        "--no-efficientnet",
        dest="efficientnet",
        action="store_false",
        help="skip EfficientNet-Lite0 off the shelf",
    )
    c.add_argument("--no-tsne", dest="tsne", action="store_false")
    c.add_argument(
        "--tsne-variants",
        nargs="+",
        default=None,
        metavar="NAME",
        help="variants (as named in the table) to draw a t-SNE of, or 'all' (default: the best "
        "classification layer, GeM p=3, the best fine-tuned run, the best variant)",
    )
    for name in (
        "fit_images",
        "p_images",
        "p_steps",
        "compress_dim",
        "distractors",
        "tsne_images",
        "image_size",
        "n_resamples",
        "batch_size",
        "seed",
    ):
        c.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    c.add_argument("--data", default=None, help="the base's data if it has moved")
    c.add_argument("--device", default=None)
    c.set_defaults(func=_compare)


def _add_report(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="rewrite OUT/report.md/html from OUT/comparison.json")
    r.add_argument("folder", help="the --out folder of `neuralcodes tuned compare`")
    r.add_argument("--tuned", nargs="*", default=[], help="fine-tuning runs to add a section for")
    r.add_argument(
        "--publish",
        metavar="DIR",
        help="also copy the report, downscaled figures, the comparison JSON, the "
        "per-query AP and the fine-tuning runs' config/history into DIR",
    )
    r.add_argument(
        "--max-figure-side",
        type=int,
        default=1200,
        help="with --publish: longest figure side in pixels",
    )
    r.add_argument(
        "--budget-mb",
        type=float,
        default=5.0,
        help="with --publish: the most DIR may hold; figures shrink to fit",
    )
    r.set_defaults(func=_report)


def _classifier(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.tuned_codes.classifier import train_map_classifier
    from neuralcodes.recipes.tuned_codes.config import ClassifierConfig

    run = train_map_classifier(
        classify_config(args, ClassifierConfig),
        args.out,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    run.finish()
    console.print(f"run folder: {run.root}")


def _train(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.tuned_codes.train import train_tuned

    values = {f.name: getattr(args, f.name) for f in fields(TunedConfig) if hasattr(args, f.name)}
    values["data"] = absolute_data(args.data)
    values["base"] = _base(args.base)
    if args.ood_classes:
        values["ood_classes"] = [c.strip() for c in args.ood_classes.split(",") if c.strip()]
        values["n_ood"] = len(values["ood_classes"])
    check_checkpoint_minutes(args)
    if (
        args.epochs is None
    ):  # a resumed run keeps its own number of epochs unless --epochs asks for another
        values["epochs"] = resumed_config(args).get("epochs", TunedConfig.epochs)
    run = train_tuned(
        TunedConfig(**values),
        args.out,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    console.print(f"run folder: {run.root}")


def _base(spec: str) -> str:
    """A base run folder made absolute (the run records it), or a pretrained base's name."""
    if spec in PRETRAINED_BASES:
        return spec
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"--base {spec}: no such run folder; give a classifier run folder or one of "
            f"{', '.join(PRETRAINED_BASES)}"
        )
    return str(path.resolve())


def _compare(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.tuned_codes.compare import CompareOptions, compare
    from neuralcodes.report.tuned_codes import write_comparison_report

    given = {
        f.name: getattr(args, f.name)
        for f in fields(CompareOptions)
        if getattr(args, f.name, None) is not None
    }
    given["data"] = absolute_data(args.data)
    result = compare(args.base, args.out, CompareOptions(**given))
    md, _ = write_comparison_report(args.out, tuple(args.tuned))
    console.print(
        f"best variant that never saw a held-out class: {result['best_unseen']}\nreport: {md}"
    )


def _report(args: argparse.Namespace) -> None:
    from neuralcodes.report.tuned_codes import write_comparison_report

    md, _ = write_comparison_report(args.folder, tuple(args.tuned))
    console.print(f"report: {md}")
    if args.publish:
        from neuralcodes.report.publish import publish_comparison

        dest = publish_comparison(
            args.folder, args.publish, tuple(args.tuned), args.max_figure_side, args.budget_mb
        )
        console.print(
            f"published: {dest} (report.md, report.html, figures/, comparison.json, per_query_ap.npz, runs/)"
        )
