"""Helpers of the retrieval-tuned-codes tests: small data and a base classifier run that needs no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.learning.checkpoint import save_checkpoint
from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.neural_codes.train import make_split
from neuralcodes.recipes.run_data import check_split
from neuralcodes.recipes.tuned_codes.config import ClassifierConfig, TunedConfig
from neuralcodes.runs import Run


def colour_dataset(
    n_classes: int = 8, per_class: int = 20, seed: int = 0, noise: float = 35.0, size: int = 32
) -> Dataset:
    """Classes differ in mean colour, under pixel noise of standard deviation ``noise``; ``size`` x ``size``
    images (the tiny network takes any size; small ones keep the tests fast)."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(40, 215, (n_classes, 3))
    images = np.concatenate(
        [
            np.clip(rng.normal(c, noise, (per_class, size, size, 3)), 0, 255).astype(np.uint8)
            for c in centres
        ]
    )
    labels = np.repeat(np.arange(n_classes), per_class)
    ids = [f"c{i}" for i in range(n_classes)]
    return Dataset(
        "colours", ImageSet(images, labels, ids, ids), None, f"colours-{seed}", "colours"
    )


def untrained_base(
    root: Path, dataset: Dataset, arch: str = "tiny", seed: int = 0, **options
) -> Path:
    """A classifier run folder holding randomly initialised weights as its best epoch."""
    cfg = ClassifierConfig(arch=arch, device="cpu", **options).validate()
    run = Run(root)
    split = make_split(cfg, dataset)
    run.write_config(cfg)
    run.pin_data(dataset.name, dataset.checksum, dataset.location)
    check_split(run, split)
    torch.manual_seed(seed)
    save_checkpoint(run.best_checkpoint, MapClassifier(split.n_in_domain, arch))
    return root


def tuned_config(base: Path, **overrides) -> TunedConfig:
    values = {
        "base": str(base),
        "batch_size": 16,
        "m_per_class": 4,
        "batches_per_epoch": 3,
        "epochs": 1,
        "val_images": 60,
        "whiten_images": 120,
        "eval_batch_size": 128,
        "device": "cpu",
        "lr": 1e-3,
    }
    return TunedConfig(**{**values, **overrides})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]
