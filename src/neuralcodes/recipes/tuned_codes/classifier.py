"""A 64x64 ResNet-18 (or the tiny test network) trained from scratch as a classifier of the in-domain classes.

The course split, early stopping on validation loss and the training itself are the ConvNet's
(:func:`neuralcodes.recipes.neural_codes.train.train_classifier` with this network): a run resumes
from the batch it stopped at, and trains under torchrun the same way.

    RUN/config.json  data.json  split.json   ClassifierConfig, pinned data, the course split
    RUN/history.json / history.csv           per-epoch training and validation loss / accuracy
    RUN/checkpoints/{last,best}.pt           resume state; the best epoch's weights
"""

from __future__ import annotations

from pathlib import Path

import torch

from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset
from neuralcodes.device import pick_device
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.neural_codes.train import Prepared, make_split, train_classifier
from neuralcodes.recipes.run_data import check_split, data_spec, load_run_data
from neuralcodes.recipes.tuned_codes.config import ClassifierConfig
from neuralcodes.runs import Run


def train_map_classifier(
    cfg: ClassifierConfig,
    out: str | Path,
    resume: bool = False,
    dataset: Dataset | None = None,
    checkpoint_minutes: float = 5.0,
) -> Run:
    """Train into the run folder ``out`` (``resume=True`` continues it); the best epoch ends in best.pt."""
    return train_classifier(
        cfg,
        out,
        resume,
        dataset,
        checkpoint_minutes,
        network=lambda cfg, n_classes: MapClassifier(n_classes, cfg.arch),
    )


def load_map_classifier(
    run: Run, device: str | None = None
) -> tuple[MapClassifier, ClassifierConfig]:
    """The best epoch's classifier of a ``neuralcodes tuned classifier`` run, in eval mode."""
    cfg = ClassifierConfig.from_dict(run.config("neuralcodes tuned classifier"), source=run.root)
    if not run.best_checkpoint.exists():
        raise FileNotFoundError(
            f"{run.root} has no trained weights yet ({run.best_checkpoint} is missing): train it first "
            f"(`neuralcodes tuned classifier --out {run.root}`, with --resume to continue an interrupted training)"
        )
    state = load_checkpoint(run.best_checkpoint)["model"]
    model = MapClassifier(state["fc.weight"].shape[0], cfg.arch)
    model.load_state_dict(state)
    return model.to(
        pick_device(device or cfg.device), memory_format=torch.channels_last
    ).eval(), cfg


def open_map_classifier(
    run: Run, dataset: Dataset | None = None, device: str | None = None, data: str | None = None
) -> tuple[Prepared, ClassifierConfig]:
    """A trained classifier run with its (pinned) data, verified split and device-resident images."""
    model, cfg = load_map_classifier(run, device)
    dataset = load_run_data(run, data_spec(run, cfg.data, data), cfg.skip_corrupt, dataset)
    split = make_split(cfg, dataset)
    check_split(run, split)
    dev = next(model.parameters()).device
    return Prepared(dataset, split, DeviceImages(dataset.train.images, dev), model, dev), cfg  # type: ignore[arg-type]
