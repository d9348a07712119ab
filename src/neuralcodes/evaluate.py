"""Classification quality of a trained run: cross-entropy, accuracy and top-5 on train/val/test."""
from __future__ import annotations

from pathlib import Path

from .data.batches import DeviceImages
from .data.imageset import Dataset
from .data.sources import load_dataset
from .data.splits import course_split
from .runs import Run
from .train.classify import evaluate_classifier, load_trained

SPLITS = ("train", "val", "test")


def evaluate_run(run: Run | str | Path, dataset: Dataset | None = None, device: str | None = None) -> dict[str, dict[str, float]]:
    """Evaluate the best epoch of ``run`` (dropout off) and store the table in metrics.json."""
    run = run if isinstance(run, Run) else Run(run)
    model, cfg = load_trained(run, device)
    dataset = dataset or load_dataset(cfg.data, skip_corrupt=cfg.skip_corrupt)
    split = course_split(dataset.train.labels, dataset.train.num_classes, n_ood=cfg.n_ood, seed=cfg.split_seed)
    images = DeviceImages(dataset.train.images, next(model.parameters()).device)
    results = {
        name: evaluate_classifier(model, images, dataset.train.labels, getattr(split, name), cfg.eval_batch_size, cfg.bf16)
        for name in SPLITS
    }
    run.update_metrics("classification", results)
    return results
