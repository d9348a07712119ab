"""The main job, `neuralcodes run`: the whole course protocol in one call.

data -> train with early stopping -> evaluate -> codes for L5/L6/L7 -> retrieval and mAP -> PCA study
-> report. Optional variants (augmentation, weight decay, batch norm) are trained as sibling runs
under RUN/variants/ so the report can say, with numbers, which technique improves test accuracy.
Every stage resumes: a finished stage's results are kept, an interrupted training continues.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from neuralcodes import io
from neuralcodes.data.sources import load_dataset
from neuralcodes.progress import console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.neural_codes.evaluate import evaluate_run
from neuralcodes.recipes.neural_codes.study import StudyOptions, retrieval_study
from neuralcodes.recipes.neural_codes.train import train_classifier
from neuralcodes.runs import Run

# Each variant changes one thing of the plain recipe (a thin registry instead of if-chains).
VARIANTS: dict[str, dict] = {
    "augment": {"augment": True},
    "weight_decay": {"weight_decay": 5e-4},
    "batch_norm": {"batch_norm": True},
}


def _train_and_evaluate(cfg: ClassifyConfig, run: Run, dataset, resume: bool) -> dict:
    """Train (or continue training), then evaluate; with ``resume`` a finished stage is kept as it is."""
    metrics = run.metrics() if resume else {}
    if "training" not in metrics:
        train_classifier(cfg, run.root, resume=resume, dataset=dataset)
    if "classification" in metrics:
        return metrics["classification"]
    return evaluate_run(run, dataset=dataset, device=cfg.device)


def _study(run: Run, dataset, options: StudyOptions, resume: bool) -> dict:
    metrics = run.metrics() if resume else {}
    if "retrieval" in metrics and "pca" in metrics:
        return {"retrieval": metrics["retrieval"], "pca": metrics["pca"]}
    return retrieval_study(run, dataset, options)


def run_protocol(
    cfg: ClassifyConfig,
    out: str | Path,
    variants: Sequence[str] = (),
    study: StudyOptions | None = None,
    resume: bool = False,
) -> Run:
    """Run every stage into ``out`` (the report is written from it by :func:`neuralcodes.report.build_report`)."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    run = Run(out)
    if run.exists() and not resume and run.last_checkpoint.exists():
        raise FileExistsError(f"{run.root} already holds a run; pass --resume to continue it or choose another folder")
    dataset = load_dataset(cfg.data, skip_corrupt=cfg.skip_corrupt)  # decoded once, shared by every stage

    classification = _train_and_evaluate(cfg, run, dataset, resume)
    results = _study(run, dataset, replace(study or StudyOptions(), device=cfg.device), resume)

    if variants:
        table = {"baseline": _variant_row(run, classification, results)}
        for name in variants:
            console.rule(f"variant: {name}")
            vrun = Run(run.root / "variants" / name)
            vcls = _train_and_evaluate(replace(cfg, **VARIANTS[name]), vrun, dataset, resume)
            vres = _study(vrun, dataset, replace(study or StudyOptions(), device=cfg.device, pca_dims=(None,)), resume)
            table[name] = _variant_row(vrun, vcls, vres)
        run.update_metrics("variants", table)

    return run


def _variant_row(run: Run, classification: dict, results: dict) -> dict:
    training = run.metrics()["training"]
    return {
        "n_test": io.read_json(run.root / "split.json")["sizes"]["test"],
        "run": str(run.root),
        "test_loss": classification["test"]["loss"],
        "test_accuracy": classification["test"]["accuracy"],
        "test_top5": classification["test"]["top5"],
        "best_epoch": training["best_epoch"],
        "mAP": {layer: v["mAP"] for layer, v in results["retrieval"]["layers"].items()},
    }
