"""Classification quality of a trained run: cross-entropy, accuracy and top-5 on train/val/test."""

from __future__ import annotations

from pathlib import Path

from neuralcodes.data.imageset import Dataset
from neuralcodes.data.splits import Split
from neuralcodes.recipes.neural_codes.classification_step import evaluate_classifier
from neuralcodes.recipes.neural_codes.train import open_trained
from neuralcodes.runs import Run

SPLITS = ("train", "val", "test")


def evaluate_run(
    run: Run | str | Path,
    dataset: Dataset | None = None,
    device: str | None = None,
    data: str | None = None,
    split: Split | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate the best epoch of ``run`` (dropout off) and store the table in metrics.json.

    ``data`` points the run at its data when it has moved; it must be the same data (checksum).
    ``split``: the run's split when the caller holds it already (``neuralcodes run`` draws it once).
    """
    run = run if isinstance(run, Run) else Run(run)
    run.config(expect="neuralcodes train")
    with run.lock():
        p, cfg = open_trained(run, dataset, device, data, split)
        labels = p.labels
        results = {
            name: evaluate_classifier(
                p.model, p.images, labels, getattr(p.split, name), cfg.eval_batch_size, cfg.bf16
            )
            for name in SPLITS
        }
        run.update_metrics("classification", results)
    return results
