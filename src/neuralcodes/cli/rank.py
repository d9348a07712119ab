"""`neuralcodes rank`: deep ranking (train / evaluate / compare-mining)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from neuralcodes.cli.options import absolute_data, add_checkpoint_option, check_checkpoint_minutes
from neuralcodes.learning.miners import MINERS
from neuralcodes.learning.optimizers import OPTIMIZERS
from neuralcodes.recipes.deep_ranking.config import RankConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    rank = subparsers.add_parser("rank", help="deep ranking with triplets (Wang et al. 2014)")
    sub = rank.add_subparsers(dest="rank_command", required=True, metavar="STEP")

    _add_train(sub)
    evaluate = sub.add_parser("evaluate", help="similarity precision, mAP / P@10 / P@30, figures")
    evaluate.add_argument("run", help="run folder of `rank train`")
    evaluate.add_argument(
        "--max-queries", type=int, default=None, help="validation queries (default: all)"
    )
    evaluate.set_defaults(func=_evaluate)

    compare = sub.add_parser(
        "compare-mining", help="random vs semi-hard vs hard vs batch-hard mining on the run's data"
    )
    compare.add_argument("run", help="run folder of `rank train` (its cached features are reused)")
    compare.add_argument("--miners", nargs="+", default=list(MINERS), choices=MINERS)
    compare.add_argument("--epochs", type=int, default=None)
    compare.add_argument("--triplets-per-epoch", type=int, default=None)
    compare.add_argument("--max-queries", type=int, default=2000)
    compare.set_defaults(func=_compare)


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = RankConfig()
    train = sub.add_parser(
        "train", help="train a triplet network (frozen pretrained backbone + head by default)"
    )
    train.add_argument(
        "--data",
        default=None,
        help="dataset: omitted = the embedded sample; or the Tiny ImageNet zip",
    )
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument(
        "--backbone", default=d.backbone, help="efficientnet_lite0, resnet18/50/101, convnet, tiny"
    )
    train.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="random backbone weights"
    )
    train.add_argument(
        "--weights",
        default=None,
        help="local backbone weight file (convnet: a `neuralcodes train` run)",
    )
    add_checkpoint_option(train)
    train.add_argument(
        "--train-backbone",
        dest="freeze_backbone",
        action="store_false",
        help="train the backbone too (default: frozen, features cached once)",
    )
    train.add_argument(
        "--no-multiscale", dest="multiscale", action="store_false", help="deep branch only"
    )
    _add_training_options(train, d)
    train.set_defaults(func=_train)


def _add_training_options(train: argparse.ArgumentParser, d: RankConfig) -> None:
    """The numbers of `rank train` (defaults from :class:`RankConfig`), optimiser, mining, precision, device."""
    for name, kind in (
        ("image_size", int),
        ("embedding_dim", int),
        ("head_hidden", int),
        ("gap", float),
        ("lr", float),
        ("weight_decay", float),
        ("batch_size", int),
        ("epochs", int),
        ("triplets_per_epoch", int),
        ("eval_triplets", int),
        ("seed", int),
        ("feature_batch_size", int),
    ):
        train.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name))
    train.add_argument("--optimizer", default=d.optimizer, choices=sorted(OPTIMIZERS))
    train.add_argument(
        "--mining",
        default=d.mining,
        choices=MINERS,
        help="in-batch mining: semihard / hard = all such triplets of a batch, batch_hard = one per image",
    )
    train.add_argument(
        "--squared-distance",
        action="store_true",
        help="squared Euclidean D in the loss (the paper's)",
    )
    train.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast"
    )
    train.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)"
    )


def _train(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.deep_ranking.train import train_ranking

    check_checkpoint_minutes(args)
    values = {f.name: getattr(args, f.name) for f in fields(RankConfig) if hasattr(args, f.name)}
    # The run records where its data and weights are, whatever the working directory `rank evaluate` runs in.
    values["data"] = absolute_data(args.data)
    if args.weights is not None:
        values["weights"] = str(Path(args.weights).expanduser().resolve())
    train_ranking(
        RankConfig(**values),
        args.out,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )


def _evaluate(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.deep_ranking.evaluate import evaluate_ranking

    _at_least_one(args, "max_queries")
    evaluate_ranking(args.run, max_queries=args.max_queries)


def _compare(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.deep_ranking.evaluate import compare_mining

    _at_least_one(args, "epochs", "triplets_per_epoch", "max_queries")
    compare_mining(args.run, args.miners, args.epochs, args.triplets_per_epoch, args.max_queries)


def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Before any features are computed: 0 would silently mean "the run's own" (compare-mining's --epochs) or
    score no query at all, and a negative number fails deep inside numpy."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
