"""The main job, `neuralcodes run`: the whole course protocol in one call.

data -> train with early stopping -> evaluate -> codes for L5/L6/L7 -> retrieval and mAP -> PCA study
(the CLI's `run` then writes the report). Optional variants (augmentation, weight decay, batch norm)
are trained as sibling runs under RUN/variants/ so the report can say, with numbers, which technique
improves test accuracy; with several seeds, each variant (and the plain recipe) is also trained
once per extra seed (RUN/seeds/<variant>-seed<k>/, training and evaluation only) so an effect
can be compared with the spread over seeds.
Every stage resumes: a finished stage's results are kept, an interrupted training continues.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from neuralcodes import io
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.splits import Split
from neuralcodes.device import pick_device
from neuralcodes.progress import console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.neural_codes.evaluate import evaluate_run
from neuralcodes.recipes.neural_codes.study import CODE_LAYERS, StudyOptions, retrieval_study
from neuralcodes.recipes.neural_codes.train import make_split, train_classifier
from neuralcodes.recipes.run_data import load_run_data
from neuralcodes.runs import Run

# Each variant changes one thing of the plain recipe (a thin registry instead of if-chains).
VARIANTS: dict[str, dict] = {
    "augment": {"augment": True},
    "weight_decay": {"weight_decay": 5e-4},
    "batch_norm": {"batch_norm": True},
}


def validate_study(options: StudyOptions) -> StudyOptions:
    """Reject study options before any training, naming the option."""
    if options.pca_fit_images < 1:
        raise ValueError(f"--pca-fit-images must be at least 1, got {options.pca_fit_images}")
    unknown = set(options.layers) - set(CODE_LAYERS)
    if unknown:
        raise ValueError(
            f"unknown code layer(s) {sorted(unknown)}; choose from {', '.join(CODE_LAYERS)}"
        )
    bad = [d for d in options.pca_dims if d is not None and d < 1]
    if bad:
        raise ValueError(f"PCA dimensions must be at least 1, got {bad}")
    if not options.scales or any(
        not isinstance(x, (int, float)) or isinstance(x, bool) or not x > 0 for x in options.scales
    ):
        raise ValueError(
            f"--scales must be positive numbers, e.g. 1,0.7071,1.4142, got {list(options.scales)!r}"
        )
    if options.code_dtype not in ("float32", "float16"):
        raise ValueError(f"code dtype must be float32 or float16, got {options.code_dtype!r}")
    return options


def _train_and_evaluate(
    cfg: ClassifyConfig, run: Run, dataset: Dataset, split: Split, resume: bool, minutes: float
) -> dict:
    """Train (or continue training), then evaluate; with ``resume`` a finished stage is kept as it is."""
    metrics = run.metrics() if resume else {}
    if "training" not in metrics:
        train_classifier(
            cfg, run.root, resume=resume, dataset=dataset, checkpoint_minutes=minutes, split=split
        )
    if "classification" in metrics:
        return metrics["classification"]
    run.write_progress("evaluation")
    return evaluate_run(run, dataset=dataset, device=cfg.device, split=split)


def _study(run: Run, dataset: Dataset, split: Split, options: StudyOptions, resume: bool) -> dict:
    metrics = run.metrics() if resume else {}
    if "retrieval" in metrics and "pca" in metrics:
        return {"retrieval": metrics["retrieval"], "pca": metrics["pca"]}
    run.write_progress("retrieval study")
    io.write_json(run.root / "study.json", asdict(options))
    return retrieval_study(run, dataset, options, split)


def run_protocol(
    cfg: ClassifyConfig,
    out: str | Path,
    variants: Sequence[str] = (),
    study: StudyOptions | None = None,
    resume: bool = False,
    seeds: Sequence[int] = (),
    checkpoint_minutes: float = 5.0,
) -> Run:
    """Run every stage into ``out`` (the report is written from it by :func:`neuralcodes.report.build_report`).

    ``seeds``: extra training seeds for the technique comparison (besides ``cfg.seed``).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    cfg.validate()
    pick_device(cfg.device)
    study = validate_study(replace(study or StudyOptions(), device=cfg.device))
    run = Run(out)
    if run.exists() and not resume and run.last_checkpoint.exists():
        raise FileExistsError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another folder"
        )
    with run.lock():
        if run.exists():
            run.write_config(
                cfg
            )  # a resumed run: refuses other options, naming them, before any work
        # Decoded once and split once, shared by every stage, variant and seed run (VARIANTS and seeds leave
        # the split options alone; each stage still checks it against its folder's split.json). A held-out
        # class too small to query fails now, not after hours.
        dataset = load_run_data(run, cfg.data, cfg.skip_corrupt, pin=False)
        split = make_split(cfg, dataset)

        classification = _train_and_evaluate(cfg, run, dataset, split, resume, checkpoint_minutes)
        results = _study(run, dataset, split, study, resume)

        if variants:
            _variants(
                run,
                cfg,
                variants,
                seeds,
                dataset,
                split,
                study,
                (classification, results),
                resume,
                checkpoint_minutes,
            )
        run.write_progress("done")
    return run


def _variants(
    run: Run,
    cfg: ClassifyConfig,
    variants: Sequence[str],
    seeds: Sequence[int],
    dataset: Dataset,
    split: Split,
    study: StudyOptions,
    baseline: tuple[dict, dict],
    resume: bool,
    checkpoint_minutes: float,
) -> None:
    """Each variant trained, evaluated and studied in ``run/variants/NAME`` (with its seed runs), its row of
    the comparison table written as soon as it is done; ``baseline``: the run's own classification and study."""
    classification, results = baseline
    extra = [s for s in seeds if s != cfg.seed]
    table = {
        "baseline": _variant_row(
            run,
            classification,
            results,
            _seed_runs(run, "baseline", cfg, extra, dataset, split, resume, checkpoint_minutes),
        )
    }
    # Written after every variant: a variant takes hours on a CPU, so the report of a run still
    # training shows the finished ones and names those to come.
    run.update_metrics("variants_pending", list(variants))
    for i, name in enumerate(variants):
        console.rule(f"variant: {name}")
        vcfg = replace(cfg, **VARIANTS[name])
        vrun = Run(run.root / "variants" / name)
        run.write_progress(f"variant {name}")
        with vrun.lock():
            vcls = _train_and_evaluate(vcfg, vrun, dataset, split, resume, checkpoint_minutes)
            vres = _study(vrun, dataset, split, replace(study, pca_dims=(None,)), resume)
            vrun.finish()  # else `status` shows its last stage as if it stopped there
        table[name] = _variant_row(
            vrun,
            vcls,
            vres,
            _seed_runs(run, name, vcfg, extra, dataset, split, resume, checkpoint_minutes),
        )
        run.update_metrics("variants", table)
        run.update_metrics("variants_pending", list(variants[i + 1 :]))


def _seed_runs(
    run: Run,
    name: str,
    cfg: ClassifyConfig,
    seeds: Sequence[int],
    dataset: Dataset,
    split: Split,
    resume: bool,
    minutes: float,
) -> list[float]:
    """Test accuracy of ``cfg`` trained once per extra seed (training and evaluation only)."""
    accuracies = []
    for seed in seeds:
        srun = Run(run.root / "seeds" / f"{name}-seed{seed}")
        run.write_progress(f"seed runs: {name}, seed {seed}")
        with srun.lock():
            result = _train_and_evaluate(
                replace(cfg, seed=seed), srun, dataset, split, resume, minutes
            )
            accuracies.append(result["test"]["accuracy"])
            srun.finish()
    return accuracies


def _variant_row(
    run: Run, classification: dict, results: dict, seed_accuracies: list[float]
) -> dict:
    training = run.metrics()["training"]
    row = {
        "n_test": io.read_json(run.root / "split.json")["sizes"]["test"],
        "run": str(run.root),
        "test_loss": classification["test"]["loss"],
        "test_accuracy": classification["test"]["accuracy"],
        "test_top5": classification["test"]["top5"],
        "best_epoch": training["best_epoch"],
        "mAP": {layer: v["mAP"] for layer, v in results["retrieval"]["layers"].items()},
    }
    if seed_accuracies:
        row["test_accuracy_seeds"] = [classification["test"]["accuracy"], *seed_accuracies]
    return row
