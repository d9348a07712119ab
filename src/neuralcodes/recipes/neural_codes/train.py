"""The classification recipe: train the course ConvNet on the in-domain classes (nanoGPT-sized loop).

Cross-entropy, Adam (amsgrad), early stopping on validation loss keeping the best epoch, an atomic
checkpoint after every epoch (weights, optimiser, RNG states, history) so ``resume=True`` continues
an interrupted run to the same result as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuralcodes import io
from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.sources import load_dataset
from neuralcodes.data.splits import Split, course_split
from neuralcodes.device import autocast, pick_device
from neuralcodes.learning.checkpoint import load_checkpoint, save_checkpoint
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.models.backbones import ConvNetBackbone, register_backbone
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.progress import ProgressBar, console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run


@dataclass
class Prepared:
    """Everything a classification run reads: data, split, device-resident images, model."""

    dataset: Dataset
    split: Split
    images: DeviceImages
    model: NeuralCodesConvNet
    device: torch.device


def prepare(cfg: ClassifyConfig, dataset: Dataset | None = None) -> Prepared:
    """Load data, make the course split, build the model (CUDA when present, channels-last)."""
    dataset = dataset or load_dataset(cfg.data, skip_corrupt=cfg.skip_corrupt)
    split = course_split(dataset.train.labels, dataset.train.num_classes, n_ood=cfg.n_ood, seed=cfg.split_seed)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = NeuralCodesConvNet(split.n_in_domain, batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    return Prepared(dataset, split, DeviceImages(dataset.train.images, device), model, device)


@torch.inference_mode()
def evaluate_classifier(
    model: torch.nn.Module,
    images: DeviceImages,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int = 500,
    bf16: bool = True,
) -> dict[str, float]:
    """Cross-entropy, accuracy and top-5 accuracy over ``indices`` with dropout off."""
    model.eval()
    loss_sum, correct, correct5 = 0.0, 0, 0
    for x, y in iterate_batches(images, labels, indices, batch_size):
        with autocast(images.device, bf16):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += (top5[:, 0] == y).sum().item()
        correct5 += (top5 == y[:, None]).any(dim=1).sum().item()
    n = max(len(indices), 1)
    return {"loss": loss_sum / n, "accuracy": correct / n, "top5": correct5 / n}


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: DeviceImages,
    labels: np.ndarray,
    indices: np.ndarray,
    cfg: ClassifyConfig,
    generator: torch.Generator,
    description: str,
) -> dict[str, float]:
    model.train()
    augment = Augment() if cfg.augment else None
    loss_sum, correct, seen = 0.0, 0, 0
    with ProgressBar(len(indices), description, unit="img") as bar:
        for x, y in iterate_batches(images, labels, indices, cfg.batch_size, True, generator, augment):
            with autocast(images.device, cfg.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.advance(len(y), status=f"loss {loss_sum / seen:.3f}")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def train_classifier(cfg: ClassifyConfig, out: str | Path, resume: bool = False, dataset: Dataset | None = None) -> Run:
    """Train with early stopping into the run folder ``out``; the best epoch's weights end in best.pt."""
    cfg.validate()
    run = Run(out)
    if run.last_checkpoint.exists() and not resume:
        raise FileExistsError(f"{run.root} already holds a training run; pass --resume to continue it or choose another folder")
    run.write_config(cfg)
    p = prepare(cfg, dataset)
    labels = p.dataset.train.labels
    optimizer = build_optimizer("adam_amsgrad", p.model.parameters(), cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    stopper, history, start = EarlyStopping(cfg.patience), [], 0
    if resume and run.last_checkpoint.exists():
        state = load_checkpoint(run.last_checkpoint, p.model, optimizer, generator, restore_rng=True)
        stopper, history, start = EarlyStopping.from_state(state["early_stopping"]), state["history"], state["epoch"] + 1
        console.print(f"resuming {run.root} after epoch {state['epoch'] + 1}")
    io.write_json(run.root / "split.json", p.split.to_json())

    for epoch in range(start, cfg.epochs):
        if stopper.stopped:
            break
        t0 = time.perf_counter()
        tr = train_one_epoch(p.model, optimizer, p.images, labels, p.split.train, cfg, generator, f"epoch {epoch + 1}/{cfg.epochs}")
        seconds = time.perf_counter() - t0
        va = evaluate_classifier(p.model, p.images, labels, p.split.val, cfg.eval_batch_size, cfg.bf16)
        history.append({
            "epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
            "val_loss": va["loss"], "val_accuracy": va["accuracy"], "val_top5": va["top5"],
            "seconds": seconds, "images_per_s": len(p.split.train) / seconds,
        })  # fmt: skip
        if stopper.step(epoch + 1, va["loss"]):
            save_checkpoint(run.best_checkpoint, p.model, epoch=epoch)
        save_checkpoint(run.last_checkpoint, p.model, optimizer, generator, epoch=epoch,
                        history=history, early_stopping=stopper.state_dict())  # fmt: skip
        _write_history(run, history)
        console.print(
            f"epoch {epoch + 1}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.3f} | "
            f"val loss {va['loss']:.4f} acc {va['accuracy']:.3f} top5 {va['top5']:.3f} | {history[-1]['images_per_s']:.0f} img/s"
        )

    if stopper.stopped:
        console.print(f"early stopping: validation loss rose; keeping the weights of epoch {stopper.best_epoch} (val loss {stopper.best:.4f})")
    run.update_metrics("training", {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
                                    "epochs_run": len(history), "stopped_early": stopper.stopped})  # fmt: skip
    return run


def _write_history(run: Run, history: list[dict[str, Any]]) -> None:
    io.write_json(run.history_path, history)
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k]) for k in keys) for row in history]
    io.write_text(run.root / "history.csv", "\n".join(lines) + "\n")
    from neuralcodes.plots.training import (
        plot_history,  # matplotlib is slow to import; only when writing
    )

    plot_history(history, run.figures / "training_curves.png")


def load_trained(run: Run, device: str | None = None, which: str = "best") -> tuple[NeuralCodesConvNet, ClassifyConfig]:
    """The trained ConvNet of a run (best epoch by default), in eval mode."""
    cfg = ClassifyConfig.from_dict(run.config())
    path = run.best_checkpoint if which == "best" else run.last_checkpoint
    state = load_checkpoint(path)
    num_classes = state["model"]["fc8.weight"].shape[0]
    model = NeuralCodesConvNet(num_classes, batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    model.load_state_dict(state["model"])
    dev = pick_device(device or cfg.device)
    return model.to(dev, memory_format=torch.channels_last).eval(), cfg


def open_trained(
    run: Run, dataset: Dataset | None = None, device: str | None = None
) -> tuple[Prepared, ClassifyConfig]:
    """A trained run ready to be measured: its best model, data, course split and device-resident images."""
    model, cfg = load_trained(run, device)
    dataset = dataset or load_dataset(cfg.data, skip_corrupt=cfg.skip_corrupt)
    split = course_split(dataset.train.labels, dataset.train.num_classes, n_ood=cfg.n_ood, seed=cfg.split_seed)
    dev = next(model.parameters()).device
    return Prepared(dataset, split, DeviceImages(dataset.train.images, dev), model, dev), cfg


@register_backbone("convnet")
def convnet_backbone(pretrained: bool, weights: str | Path | None, image_size: int) -> torch.nn.Module:
    """The ConvNet of a ``neuralcodes train`` run (``weights``: the run folder) up to its L7 code."""
    if weights is None:
        raise ValueError("the convnet backbone is initialised from a `neuralcodes train` run: pass --weights RUN")
    model, _ = load_trained(Run(weights), device="cpu")
    return ConvNetBackbone(model.train())
