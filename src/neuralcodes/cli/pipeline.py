"""`neuralcodes run`, `neuralcodes retrieve` and `neuralcodes report`."""
from __future__ import annotations

import argparse

from rich.table import Table

from neuralcodes.cli.options import add_classify_options, classify_config
from neuralcodes.progress import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole protocol: train -> evaluate -> codes -> mAP -> PCA -> report")
    p.add_argument("--out", default="runs/main", help="run folder (default: runs/main)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run; finished stages are kept")
    p.add_argument("--variants", default="", help="comma-separated extra runs to compare: augment,weight_decay,batch_norm")
    p.add_argument("--pca-fit-images", type=int, default=10_000, help="in-domain train images the PCA is learned on")
    p.add_argument("--whiten", action="store_true", help="PCA-whitening in the PCA study")
    p.add_argument("--ranking-run", action="append", default=[], help="a `rank train` run to include in the report")
    add_classify_options(p)
    p.set_defaults(func=run_command)

    p = sub.add_parser("retrieve", help="neural codes, mAP per layer, figures and PCA study of a trained run")
    p.add_argument("run")
    p.add_argument("--pca-fit-images", type=int, default=10_000)
    p.add_argument("--whiten", action="store_true")
    p.add_argument("--float16", action="store_true", help="store the codes as float16")
    p.add_argument("--device", default=None)
    p.set_defaults(func=retrieve_command)

    p = sub.add_parser("report", help="write RUN/report.md and RUN/report.html from the run's results")
    p.add_argument("run")
    p.add_argument("--ranking-run", action="append", default=[], help="a `rank train` run to include")
    p.set_defaults(func=report_command)


def run_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.pipeline import run_protocol
    from neuralcodes.recipes.neural_codes.study import StudyOptions

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    study = StudyOptions(pca_fit_images=args.pca_fit_images, whiten=args.whiten)
    from neuralcodes.report import build_report

    run = run_protocol(classify_config(args), args.out, variants, study, args.resume)
    md, html = build_report(run, args.ranking_run)
    console.print(f"report: {html}\n        {md}")


def retrieve_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.study import StudyOptions, retrieval_study

    options = StudyOptions(pca_fit_images=args.pca_fit_images, whiten=args.whiten,
                           code_dtype="float16" if args.float16 else "float32", device=args.device)  # fmt: skip
    results = retrieval_study(args.run, options=options)
    table = Table(title="Leave-one-out retrieval on the held-out classes")
    layers = results["retrieval"]["layers"]
    columns = list(next(iter(layers.values())))
    for column in ("layer", *columns):
        table.add_column(column, justify="right")
    for layer, values in layers.items():
        table.add_row(layer, *(f"{values[c]:.4f}" if isinstance(values[c], float) else str(values[c]) for c in columns))
    console.print(table)


def report_command(args: argparse.Namespace) -> None:
    from neuralcodes.report import build_report

    md, html = build_report(args.run, args.ranking_run)
    console.print(f"report: {html}\n        {md}")
