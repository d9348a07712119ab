"""The classification recipe: train the course ConvNet on the in-domain classes (nanoGPT-sized loop).

Cross-entropy, Adam (amsgrad), early stopping on validation loss keeping the best epoch. Checkpoints
(weights, optimiser, RNG states, history, and the position inside the epoch) are written atomically
at the end of every epoch, every ``checkpoint_minutes`` inside an epoch, and on SIGINT/SIGTERM, so
``resume=True`` continues from the exact batch to the same weights as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.splits import Split, class_indices, course_split
from neuralcodes.device import pick_device
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.distributed import barrier, init_world
from neuralcodes.models.backbones import ConvNetBackbone, register_backbone
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.neural_codes.classification_step import fit
from neuralcodes.recipes.run_data import check_split, data_spec, load_run_data
from neuralcodes.runs import TRAINS_ON, Run


@dataclass
class Prepared:
    """Everything a classification run reads: data, split, device-resident images, model."""

    dataset: Dataset
    split: Split
    images: DeviceImages
    model: NeuralCodesConvNet
    device: torch.device

    @property
    def labels(self) -> np.ndarray:
        """Class indices the classifier learns: in-domain classes numbered 0 .. n_in_domain - 1."""
        return self.split.in_domain_labels(self.dataset.train.labels)


def make_split(cfg: ClassifyConfig, dataset: Dataset) -> Split:
    """The course split of ``dataset``; every held-out class must be able to query (at least 2 images)."""
    data = dataset.train
    chosen = (
        class_indices(cfg.ood_classes, data.class_ids, data.class_names)
        if cfg.ood_classes
        else None
    )
    split = course_split(
        data.labels,
        data.num_classes,
        n_ood=None if chosen else cfg.n_ood,
        seed=cfg.split_seed,
        ood_classes=chosen,
        n_val_classes=cfg.n_val_classes,
        val_class_images=cfg.val_class_images,
    )
    counts = np.bincount(
        np.asarray(dataset.train.labels)[split.ood], minlength=dataset.train.num_classes
    )
    for c in split.ood_classes:
        if counts[c] < 2:
            raise ValueError(
                f"held-out class {dataset.train.class_ids[c]!r} ({dataset.train.class_names[c]}) has {counts[c]} image(s); "
                "leave-one-out retrieval needs at least 2 per held-out class: add images or change --n-ood"
            )
    return split


def _given_split(cfg: ClassifyConfig, dataset: Dataset, split: Split | None) -> Split:
    """``split`` when a caller drew it already (the stages of one run share one split), else drawn now.

    A given split must come from ``cfg``'s split options: it is recorded as such in a new run folder, where
    no split.json is there yet to refuse another one.
    """
    if split is None:
        return make_split(cfg, dataset)
    data = dataset.train
    chosen = (
        tuple(class_indices(cfg.ood_classes, data.class_ids, data.class_names))
        if cfg.ood_classes
        else None
    )
    drawn_with = (split.seed, split.num_classes, len(split.ood_classes), len(split.val_classes))
    if drawn_with != (cfg.split_seed, data.num_classes, cfg.n_ood, cfg.n_val_classes) or (
        chosen is not None and split.ood_classes != chosen
    ):
        raise ValueError(
            f"the split passed in (seed {split.seed}, held-out classes {list(split.ood_classes)}, "
            f"{len(split.val_classes)} validation classes) was not drawn with this run's split options "
            f"(split_seed {cfg.split_seed}, n_ood {cfg.n_ood}, n_val_classes {cfg.n_val_classes})"
        )
    return split


Network = Callable[
    [Any, int], torch.nn.Module
]  # (config, number of in-domain classes) -> classifier


def course_convnet(cfg: ClassifyConfig, n_classes: int) -> NeuralCodesConvNet:
    return NeuralCodesConvNet(n_classes, batch_norm=cfg.batch_norm, dropout=cfg.dropout)


def prepare(
    run: Run,
    cfg: ClassifyConfig,
    dataset: Dataset | None = None,
    device: torch.device | None = None,
    network: Network = course_convnet,
    split: Split | None = None,
) -> Prepared:
    """Load (and pin) data, draw (or take ``split``) and check the course split, build the model (CUDA when
    present, channels-last)."""
    device = device or pick_device(cfg.device)
    dataset = load_run_data(run, cfg.data, cfg.skip_corrupt, dataset, pin=False)
    split = _given_split(cfg, dataset, split)
    run.pin_data(dataset.name, dataset.checksum, dataset.location, dataset.skipped)
    check_split(run, split)
    torch.manual_seed(cfg.seed)
    model = network(cfg, split.n_in_domain).to(device, memory_format=torch.channels_last)
    return Prepared(dataset, split, DeviceImages(dataset.train.images, device), model, device)


def train_classifier(
    cfg: ClassifyConfig,
    out: str | Path,
    resume: bool = False,
    dataset: Dataset | None = None,
    checkpoint_minutes: float = 5.0,
    network: Network = course_convnet,
    split: Split | None = None,
) -> Run:
    """Train with early stopping into the run folder ``out``; the best epoch's weights end in best.pt.
    ``network`` builds another classifier than the course ConvNet (the ResNet of the tuned recipe);
    ``split``: the course split when the caller drew it already (:func:`make_split`), checked like a drawn one.

    A checkpoint is written every ``checkpoint_minutes`` inside an epoch and when SIGINT/SIGTERM
    arrives (then :class:`TrainingInterrupted` is raised after the save).
    """
    cfg.validate()
    run = Run(out)
    if run.last_checkpoint.exists() and not resume:
        raise FileExistsError(
            f"{run.root} already holds a training run; pass --resume to continue it or choose another folder"
        )
    world, device = init_world(pick_device(cfg.device))
    if (
        not world.is_main
    ):  # the first process checks and records the data; the others then only verify
        barrier(world)
        fit(
            run,
            cfg,
            prepare(run, cfg, dataset, device, network, split),
            resume,
            checkpoint_minutes,
            world,
        )
        return run
    with run.lock():
        if run.exists():
            _refuse_a_stretched_schedule(run, cfg)
            run.write_config(
                cfg, may_change=TRAINS_ON
            )  # a resumed run: refuses other options (naming them) before any work
        p = prepare(run, cfg, dataset, device, network, split)
        run.write_config(cfg)  # only once data, split and options are known to be good
        barrier(world)
        fit(run, cfg, p, resume, checkpoint_minutes, world)
    return run


def _refuse_a_stretched_schedule(run: Run, cfg: ClassifyConfig) -> None:
    """A cosine run laid out over its epochs cannot train on for more: its rate would jump back up from near 0."""
    recorded = run.config().get("epochs")
    if cfg.schedule != "constant" and recorded is not None and recorded != cfg.epochs:
        raise ValueError(
            f"{run.root} follows a {cfg.schedule} schedule laid out over {recorded} epochs; --epochs {cfg.epochs} would "
            f"bend it mid-run. Resume with --epochs {recorded}, or start a new run folder for a longer schedule"
        )


def load_trained(
    run: Run | str | Path, device: str | None = None, which: str = "best"
) -> tuple[NeuralCodesConvNet, ClassifyConfig]:
    """The trained ConvNet of a run folder (a :class:`Run` or its path) and its configuration.

    ``which``: ``"best"`` (the best epoch's weights) or ``"last"`` (the latest checkpoint). The model
    comes back in eval mode, channels-last, on ``device`` (default: the run's own device option).
    """
    if which not in ("best", "last"):  # any other word used to load last.pt silently
        raise ValueError(f'which must be "best" or "last" (the checkpoint to load), got {which!r}')
    run = run if isinstance(run, Run) else Run(run)
    cfg = ClassifyConfig.from_dict(run.config(), source=run.root)
    path = run.best_checkpoint if which == "best" else run.last_checkpoint
    if not path.exists():
        raise FileNotFoundError(
            f"{run.root} has no trained weights yet ({path} is missing): train it first "
            f"(`neuralcodes train --out {run.root}`, or add --resume to continue an interrupted training)"
        )
    state = load_checkpoint(path)
    num_classes = state["model"]["fc8.weight"].shape[0]
    model = NeuralCodesConvNet(num_classes, batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    model.load_state_dict(state["model"])
    dev = pick_device(device or cfg.device)
    return model.to(dev, memory_format=torch.channels_last).eval(), cfg


def open_trained(
    run: Run,
    dataset: Dataset | None = None,
    device: str | None = None,
    data: str | None = None,
    split: Split | None = None,
) -> tuple[Prepared, ClassifyConfig]:
    """A trained run ready to be measured: its best model, (pinned) data, course split and device-resident images.

    ``data`` points the run at its data when it has moved (verified by checksum against the run's record);
    ``split``: the run's split when the caller holds it already (checked against split.json like a drawn one).
    """
    model, cfg = load_trained(run, device)
    dataset = load_run_data(run, data_spec(run, cfg.data, data), cfg.skip_corrupt, dataset)
    split = _given_split(cfg, dataset, split)
    check_split(run, split)
    dev = next(model.parameters()).device
    return Prepared(dataset, split, DeviceImages(dataset.train.images, dev), model, dev), cfg


@register_backbone("convnet")
def convnet_backbone(
    pretrained: bool, weights: str | Path | None, image_size: int
) -> torch.nn.Module:
    """The ConvNet of a ``neuralcodes train`` run (``weights``: the run folder) up to its L7 code."""
    if weights is None:
        raise ValueError(
            "the convnet backbone is initialised from a `neuralcodes train` run: pass --weights RUN"
        )
    model, _ = load_trained(Run(weights), device="cpu")
    return ConvNetBackbone(model.train())
