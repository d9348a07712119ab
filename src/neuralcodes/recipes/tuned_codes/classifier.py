"""A 64x64 ResNet-18 (or the tiny test network) trained from scratch as a classifier of the in-domain classes.

The course split and early stopping on validation loss, as for the ConvNet; the loop is
:func:`neuralcodes.learning.loop.fit`, so a run resumes from the batch it stopped at.

    RUN/config.json  data.json  split.json   ClassifierConfig, pinned data, the course split
    RUN/history.json / history.csv           per-epoch training and validation loss / accuracy
    RUN/checkpoints/{last,best}.pt           resume state; the best epoch's weights
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches
from neuralcodes.data.imageset import Dataset
from neuralcodes.device import autocast, pick_device
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.loop import Loop, fit
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.neural_codes.train import Prepared, make_split
from neuralcodes.recipes.run_data import check_split, data_spec, load_run_data
from neuralcodes.recipes.tuned_codes.config import ClassifierConfig
from neuralcodes.runs import Run


def train_map_classifier(
    cfg: ClassifierConfig, out: str | Path, resume: bool = False, dataset: Dataset | None = None,
    checkpoint_minutes: float = 5.0,
) -> Run:  # fmt: skip
    """Train into the run folder ``out`` (``resume=True`` continues it); the best epoch ends in best.pt."""
    cfg.validate()
    run = Run(out)
    if run.last_checkpoint.exists() and not resume:
        raise FileExistsError(f"{run.root} already holds a training run; pass --resume to continue it or choose another folder")
    with run.lock():
        if run.exists():
            run.write_config(cfg)  # a resumed run: refuses other options before any work
        device = pick_device(cfg.device)
        dataset = load_run_data(run, cfg.data, cfg.skip_corrupt, dataset, pin=False)
        split = make_split(cfg, dataset)
        run.pin_data(dataset.name, dataset.checksum, dataset.location)
        check_split(run, split)
        torch.manual_seed(cfg.seed)
        model = MapClassifier(split.n_in_domain, cfg.arch).to(device, memory_format=torch.channels_last)
        run.write_config(cfg)

        images = DeviceImages(dataset.train.images, device)
        labels = split.in_domain_labels(dataset.train.labels)
        labels_t = torch.as_tensor(labels, device=device)
        optimizer = build_optimizer("adam_amsgrad", model.parameters(), cfg.lr, cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        augment = Augment() if cfg.augment else None

        def plan(epoch: int, g: torch.Generator) -> np.ndarray:
            return split.train[torch.randperm(len(split.train), generator=g).numpy()]

        def step(idx: np.ndarray) -> dict[str, float]:
            x = images.batch(idx)
            if augment is not None:
                x = augment(x, generator)
            y = labels_t[torch.as_tensor(idx, device=device)]
            with autocast(device, cfg.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

        def validate() -> dict[str, float]:
            return {f"val_{k}": v for k, v in classification_scores(model, images, labels, split.val, cfg).items()}

        loop = Loop(run, model, optimizer, generator, plan, step, validate, epochs=cfg.epochs, batch_size=cfg.batch_size,
                    monitor="val_loss", mode="min", patience=cfg.patience, checkpoint_minutes=checkpoint_minutes)  # fmt: skip
        result = fit(loop, resume)
        run.update_metrics("training", {"best_epoch": result.best_epoch, "best_val_loss": result.best,
                                        "epochs_run": len(result.history), "stopped_early": result.stopped_early})  # fmt: skip
        run.write_progress("trained", epochs_run=len(result.history), best_epoch=result.best_epoch)
    return run


@torch.inference_mode()
def classification_scores(model: torch.nn.Module, images: DeviceImages, labels: np.ndarray, indices: np.ndarray,
                          cfg: ClassifierConfig) -> dict[str, float]:  # fmt: skip
    """Cross-entropy and accuracy over ``indices`` in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in iterate_batches(images, labels, indices, cfg.eval_batch_size):
        with autocast(images.device, cfg.bf16):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(indices), 1)
    return {"loss": loss_sum / n, "accuracy": correct / n}


def load_map_classifier(run: Run, device: str | None = None) -> tuple[MapClassifier, ClassifierConfig]:
    """The best epoch's classifier of a ``neuralcodes tuned classifier`` run, in eval mode."""
    cfg = ClassifierConfig.from_dict(run.config("neuralcodes tuned classifier"))
    if not run.best_checkpoint.exists():
        raise FileNotFoundError(
            f"{run.root} has no trained weights yet ({run.best_checkpoint} is missing): train it first "
            f"(`neuralcodes tuned classifier --out {run.root}`, with --resume to continue an interrupted training)"
        )
    state = load_checkpoint(run.best_checkpoint)["model"]
    model = MapClassifier(state["fc.weight"].shape[0], cfg.arch)
    model.load_state_dict(state)
    return model.to(pick_device(device or cfg.device), memory_format=torch.channels_last).eval(), cfg


def open_map_classifier(run: Run, dataset: Dataset | None = None, device: str | None = None,
                        data: str | None = None) -> tuple[Prepared, ClassifierConfig]:  # fmt: skip
    """A trained classifier run with its (pinned) data, verified split and device-resident images."""
    model, cfg = load_map_classifier(run, device)
    dataset = load_run_data(run, data_spec(run, cfg.data, data), cfg.skip_corrupt, dataset)
    split = make_split(cfg, dataset)
    check_split(run, split)
    dev = next(model.parameters()).device
    return Prepared(dataset, split, DeviceImages(dataset.train.images, dev), model, dev), cfg  # type: ignore[arg-type]
