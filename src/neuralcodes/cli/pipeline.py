"""`neuralcodes run`, `neuralcodes retrieve` and `neuralcodes report`."""

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
    p = sub.add_parser(
        "run", help="the whole protocol: train -> evaluate -> codes -> mAP -> PCA -> report"
    )
    p.add_argument("--out", default="runs/main", help="run folder (default: runs/main)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run; finished stages are kept",
    )
    p.add_argument(
        "--variants",
        default="",
        help="comma-separated extra runs to compare: augment,weight_decay,batch_norm",
    )
    p.add_argument(
        "--pca-fit-images",
        type=int,
        default=10_000,
        help="in-domain train images the PCA is learned on",
    )
    p.add_argument("--whiten", action="store_true", help="PCA-whitening in the PCA study")
    p.add_argument(
        "--ranking-run",
        action="append",
        default=[],
        help="a `rank train` run to include in the report",
    )
    p.add_argument(
        "--seeds",
        default="",
        help="extra training seeds for the variant comparison, e.g. 1,2 (the plain "
        "recipe and each variant are also trained with these; test accuracy only)",
    )
    add_classify_options(p)
    add_checkpoint_option(p)
    p.set_defaults(func=run_command)

    p = sub.add_parser(
        "retrieve", help="neural codes, mAP per layer, figures and PCA study of a trained run"
    )
    p.add_argument("run")
    p.add_argument("--pca-fit-images", type=int, default=10_000)
    p.add_argument("--whiten", action="store_true")
    p.add_argument("--float16", action="store_true", help="store the codes as float16")
    p.add_argument(
        "--scales",
        default="1",
        help="multi-scale codes: comma-separated resizes averaged, e.g. 1,0.7071,1.4142 "
        "(the ConvNet sees each zoomed back to 64x64; the PCA is fitted on the same views)",
    )
    p.add_argument(
        "--flip", action="store_true", help="average each code with the mirrored image's"
    )
    p.add_argument("--device", default=None)
    p.add_argument(
        "--data",
        default=None,
        help="the run's data, if it has moved (verified against the run's checksum)",
    )
    p.set_defaults(func=retrieve_command)

    p = sub.add_parser(
        "quality",
        help="choose layer, whitening and re-ranking on the class-disjoint validation "
        "classes of RUN, then score them once on the held-out classes",
    )
    p.add_argument("run", help="a run trained with --n-val-classes")
    p.add_argument(
        "--fit-images",
        type=int,
        default=10_000,
        help="in-domain train images the whitening is fitted on",
    )
    p.add_argument("--scales", default="1", help="multi-scale codes, e.g. 1,0.7071,1.4142")
    p.add_argument(
        "--flip", action="store_true", help="average each code with the mirrored image's"
    )
    p.add_argument(
        "--rerank",
        default="all",
        help="re-ranking steps to try, comma-separated (aqe, alpha_qe, dba, "
        "dba+qe, diffusion, k_reciprocal), 'all' or 'none'; each over its default grid",
    )
    p.add_argument("--device", default=None)
    p.add_argument(
        "--data",
        default=None,
        help="the run's data, if it has moved (verified against the run's checksum)",
    )
    p.set_defaults(func=quality_command)

    p = sub.add_parser(
        "report", help="write RUN/report.md and RUN/report.html from the run's results"
    )
    p.add_argument("run")
    p.add_argument(
        "--ranking-run", action="append", default=[], help="a `rank train` run to include"
    )
    p.add_argument(
        "--publish",
        metavar="DIR",
        help="also copy the report, downscaled figures and result JSON into DIR "
        "(e.g. docs/results/full): what a repository should hold of a run, never its checkpoints",
    )
    p.add_argument(
        "--max-figure-side",
        type=int,
        default=1200,
        help="with --publish: longest figure side in pixels",
    )
    p.add_argument(
        "--budget-mb",
        type=float,
        default=5.0,
        help="with --publish: the most DIR may hold; figures shrink to fit",
    )
    p.set_defaults(func=report_command)


def run_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.pipeline import run_protocol
    from neuralcodes.recipes.neural_codes.study import StudyOptions
    from neuralcodes.report import build_report

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be non-negative, got {args.seeds!r}")
    study = StudyOptions(pca_fit_images=args.pca_fit_images, whiten=args.whiten)
    run = run_protocol(
        classify_config(args),
        args.out,
        variants,
        study,
        args.resume,
        seeds,
        args.checkpoint_minutes,
    )
    md, html = build_report(run, args.ranking_run)
    console.print(f"report: {html}\n        {md}")


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"--scales must be comma-separated numbers, e.g. 1,0.7071,1.4142, got {text!r}"
        ) from None


def _study_of_trained_run(args: argparse.Namespace, study, options) -> dict:
    """``study(run, dataset, options)`` on the trained classifier run ``args.run``, under its lock, its data verified."""
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig
    from neuralcodes.recipes.run_data import data_spec, load_run_data
    from neuralcodes.runs import Run

    run = Run(args.run)
    cfg = ClassifyConfig.from_dict(run.config(expect="neuralcodes train"), source=run.root)
    with run.lock():
        dataset = load_run_data(
            run, data_spec(run, cfg.data, absolute_data(args.data)), cfg.skip_corrupt
        )
        return study(run, dataset, options)


def _reranking(text: str) -> dict:
    from neuralcodes.recipes.neural_codes.quality import DEFAULT_RERANKING

    names = (
        []
        if text == "none"
        else list(DEFAULT_RERANKING)
        if text == "all"
        else [n.strip() for n in text.split(",")]
    )
    unknown = [n for n in names if n not in DEFAULT_RERANKING]
    if unknown:
        raise ValueError(
            f"--rerank: unknown step {', '.join(unknown)}; choose among {', '.join(DEFAULT_RERANKING)}, "
            "'all' or 'none'"
        )
    return {n: DEFAULT_RERANKING[n] for n in names}


def quality_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.quality import QualityOptions, quality_study

    options = QualityOptions(
        fit_images=args.fit_images,
        scales=_scales(args.scales),
        flip=args.flip,
        reranking=_reranking(args.rerank),
        device=args.device,
    ).validate()
    result = _study_of_trained_run(args, quality_study, options)
    table = Table(
        title="Held-out classes, pipelines chosen on the class-disjoint validation classes"
    )
    for column in (
        "representation",
        "re-ranking",
        "dim",
        "val mAP",
        "mAP",
        "mAP@R",
        "P@1",
        "vs L7 [95%]",
    ):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        d = r.get("vs_L7", {})
        table.add_row(
            r["representation"],
            r["reranking"],
            str(r["dim"]),
            f"{r['val_mAP']:.4f}",
            f"{r['mAP']:.4f}",
            f"{r.get('mAP@R', float('nan')):.4f}",
            f"{r.get('P@1', float('nan')):.3f}",
            f"{d.get('mean_difference', 0):+.4f} [{d.get('low', 0):+.4f}, {d.get('high', 0):+.4f}]",
        )
    console.print(table)


def retrieve_command(args: argparse.Namespace) -> None:
    from neuralcodes.recipes.neural_codes.pipeline import validate_study
    from neuralcodes.recipes.neural_codes.study import StudyOptions, retrieval_study

    options = validate_study(
        StudyOptions(
            pca_fit_images=args.pca_fit_images,
            whiten=args.whiten,
            code_dtype="float16" if args.float16 else "float32",
            device=args.device,
            scales=_scales(args.scales),
            flip=args.flip,
        )
    )
    results = _study_of_trained_run(args, retrieval_study, options)
    table = Table(title="Leave-one-out retrieval on the held-out classes")
    layers = results["retrieval"]["layers"]
    columns = list(next(iter(layers.values())))
    for column in ("layer", *columns):
        table.add_column(column, justify="right")
    for layer, values in layers.items():
        table.add_row(
            layer,
            *(
                f"{values[c]:.4f}" if isinstance(values[c], float) else str(values[c])
                for c in columns
            ),
        )
    console.print(table)


def report_command(args: argparse.Namespace) -> None:
    from neuralcodes.report import build_report

    if args.publish:
        from neuralcodes.report.publish import publish

        if args.ranking_run:
            raise ValueError(
                "--publish copies one run's results; write the report with --ranking-run separately"
            )
        dest = publish(args.run, args.publish, args.max_figure_side, args.budget_mb)
        console.print(
            f"published: {dest} (report.md, report.html, figures/, metrics.json, history.csv, config.json, split.json)"
        )
        return
    md, html = build_report(args.run, args.ranking_run)
    console.print(f"report: {html}\n        {md}")
