"""The classification recipe's part of training: its step, its validation, its epoch line; the loop is the shared one.

:func:`fit` hands :class:`neuralcodes.learning.loop.Loop` the cross-entropy step (each process on its
shard of the global batch, under DistributedDataParallel when torchrun starts several), the course's
reshuffle per epoch, and the validation loss that early stopping reads; checkpoints, signals, resume
and the several processes are the loop's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuralcodes import io
from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches
from neuralcodes.device import autocast, describe_machine
from neuralcodes.learning.distributed import World, distribute, from_main, process_seed, sum_over
from neuralcodes.learning.loop import FitResult, Loop
from neuralcodes.learning.loop import fit as fit_loop
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.learning.schedules import build_schedule
from neuralcodes.progress import console
from neuralcodes.retrieval.codes import extract_codes
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run


def classification_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: DeviceImages,
    labels: np.ndarray,
    cfg: ClassifyConfig,
    generator: torch.Generator,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> Callable[[np.ndarray], dict[str, float]]:
    """One cross-entropy step on some images; the figures to add up are the summed loss and the correct predictions."""
    augment = Augment() if cfg.augment else None

    def step(idx: np.ndarray) -> dict[str, float]:
        # One batch through iterate_batches: the one place indices become (augmented) images and labels.
        x, y = next(
            iterate_batches(images, labels, idx, max(len(idx), 1), False, generator, augment)
        )
        with autocast(images.device, cfg.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        return {
            "loss_sum": loss.item() * len(y),
            "correct": float((logits.argmax(1) == y).sum().item()),
        }

    return step


def classification_figures(totals: dict[str, float]) -> dict[str, float]:
    return {
        "train_loss": totals["loss_sum"] / totals["seen"],
        "train_accuracy": totals["correct"] / totals["seen"],
    }


@torch.inference_mode()
def evaluate_classifier(
    model: torch.nn.Module,
    images: DeviceImages,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int = 500,
    bf16: bool = True,
    world: World = World(),
) -> dict[str, float]:
    """Cross-entropy, accuracy and top-5 accuracy over ``indices`` with dropout off (shared out over processes)."""
    model.eval()
    loss_sum, correct, correct5, n = 0.0, 0, 0, 0
    for x, y in iterate_batches(images, labels, indices, batch_size, shard=world.shard):
        with autocast(images.device, bf16):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += (top5[:, 0] == y).sum().item()
        correct5 += (top5 == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    loss_sum, correct, correct5, n = sum_over(world, loss_sum, correct, correct5, n)
    n = max(n, 1)
    return {"loss": loss_sum / n, "accuracy": correct / n, "top5": correct5 / n}


def fit(
    run: Run,
    cfg: ClassifyConfig,
    p: Any,
    resume: bool,
    checkpoint_minutes: float,
    world: World = World(),
) -> None:
    """Train ``p.model`` on ``p.split.train`` (``p``: a prepared run), keeping the best epoch: by the leave-one-out
    mAP of the class-disjoint validation classes when the split has them, else by in-domain validation loss."""
    model = distribute(p.model, world)
    optimizer = build_optimizer(cfg.optimizer, p.model.parameters(), cfg.lr, cfg.weight_decay)
    schedule = _schedule(cfg, optimizer, steps_per_epoch=-(-len(p.split.train) // cfg.batch_size))
    generator = torch.Generator().manual_seed(
        process_seed(cfg.seed, world)
    )  # order (first process's) + augmentation
    if world.rank:
        torch.manual_seed(process_seed(cfg.seed, world))  # its own dropout masks

    def plan(epoch: int, g: torch.Generator) -> np.ndarray:
        return np.asarray(p.split.train)[torch.randperm(len(p.split.train), generator=g).numpy()]

    def validate() -> dict[str, float]:
        va = evaluate_classifier(
            p.model, p.images, p.labels, p.split.val, cfg.eval_batch_size, cfg.bf16, world
        )
        scores = {"val_loss": va["loss"], "val_accuracy": va["accuracy"], "val_top5": va["top5"]}
        if len(p.split.val_classes):
            scores.update(from_main(world, lambda: disjoint_validation_map(p.model, p, cfg)))
        return scores

    monitor = f"val_mAP_{cfg.select_layer}" if len(p.split.val_classes) else "val_loss"
    step = classification_step(model, optimizer, p.images, p.labels, cfg, generator, schedule)
    loop = Loop(
        run,
        p.model,
        optimizer,
        generator,
        plan,
        step,
        validate,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        monitor=monitor,
        mode="min" if monitor == "val_loss" else "max",
        patience=cfg.patience,
        checkpoint_minutes=checkpoint_minutes,
        world=world,
        summarise=classification_figures,
        stateful={} if schedule is None else {"schedule": schedule},
    )
    result = fit_loop(loop, resume, _epoch_line(run, monitor))
    if world.is_main:
        _record_training(run, result, monitor, world)


def _epoch_line(run: Run, monitor: str) -> Callable[[list[dict[str, Any]]], None]:
    """What the end of an epoch writes: the history (and its figure) and the epoch's line."""

    def on_epoch(history: list[dict[str, Any]]) -> None:
        write_history(run, history)
        h = history[-1]
        disjoint = f" | class-disjoint mAP {h[monitor]:.4f}" if monitor != "val_loss" else ""
        console.print(
            f"epoch {h['epoch']}: train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.3f} | val loss "
            f"{h['val_loss']:.4f} acc {h['val_accuracy']:.3f} top5 {h['val_top5']:.3f}{disjoint} | "
            f"{h['images_per_s']:.0f} img/s"
        )

    return on_epoch


def _schedule(
    cfg: ClassifyConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule of ``cfg``, or None for the course recipe (constant, no warm-up)."""
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    constant = (
        cfg.schedule == "constant" and warmup == 0
    )  # the course recipe: no scheduler, checkpoints as before
    return (
        None
        if constant
        else build_schedule(cfg.schedule, optimizer, cfg.epochs * steps_per_epoch, warmup)
    )


def _record_training(run: Run, result: FitResult, monitor: str, world: World) -> None:
    """The run's ``training`` metrics (the epoch selected and by what) and its progress: trained."""
    run.update_metrics(
        "training",
        {
            "best_epoch": result.best_epoch,
            f"best_{monitor}": result.best,
            "selected_by": monitor,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "processes": world.size,
            "machine": describe_machine(),
        },
    )
    run.write_progress("trained", epochs_run=len(result.history), best_epoch=result.best_epoch)


def disjoint_validation_map(
    model: torch.nn.Module, p: Any, cfg: ClassifyConfig
) -> dict[str, float]:
    """Leave-one-out mAP of each code layer over the class-disjoint validation images (classes never trained on)."""
    indices = p.split.val_retrieval
    labels = np.asarray(p.dataset.train.labels)[indices]
    codes = extract_codes(
        model, p.images, indices, list(cfg.code_layers), cfg.eval_batch_size, autocast=cfg.bf16
    )
    return {
        f"val_mAP_{name}": retrieval_metrics(c, labels, ks=())["mAP"] for name, c in codes.items()
    }


def write_history(run: Run, history: list[dict[str, Any]]) -> None:
    io.write_json(run.history_path, history)
    io.write_csv(run.root / "history.csv", history)
    from neuralcodes.plots.training import (
        plot_history,
    )  # matplotlib is slow to import: only when writing

    plot_history(history, run.figures / "training_curves.png")
