"""The classification recipe: train the course ConvNet on the in-domain classes (nanoGPT-sized loop).

Cross-entropy, Adam (amsgrad), early stopping on validation loss keeping the best epoch. Checkpoints
(weights, optimiser, RNG states, history, and the position inside the epoch) are written atomically
at the end of every epoch, every ``checkpoint_minutes`` inside an epoch, and on SIGINT/SIGTERM, so
``resume=True`` continues from the exact batch to the same weights as an uninterrupted run.
"""
from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from neuralcodes import io
from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.splits import Split, class_indices, course_split
from neuralcodes.device import autocast, pick_device
from neuralcodes.learning.checkpoint import load_checkpoint, save_checkpoint
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.interrupt import CheckpointTimer, GracefulStop, TrainingInterrupted
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.models.backbones import ConvNetBackbone, register_backbone
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.progress import ProgressBar, console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.run_data import check_split, data_spec, load_run_data
from neuralcodes.runs import Run

STATUS_EVERY_S = 1.0  # progress.json is rewritten at most this often (a few hundred bytes)


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
    chosen = class_indices(cfg.ood_classes, data.class_ids, data.class_names) if cfg.ood_classes else None
    split = course_split(data.labels, data.num_classes, n_ood=None if chosen else cfg.n_ood, seed=cfg.split_seed,
                         ood_classes=chosen)  # fmt: skip
    counts = np.bincount(np.asarray(dataset.train.labels)[split.ood], minlength=dataset.train.num_classes)
    for c in split.ood_classes:
        if counts[c] < 2:
            raise ValueError(
                f"held-out class {dataset.train.class_ids[c]!r} ({dataset.train.class_names[c]}) has {counts[c]} image(s); "
                "leave-one-out retrieval needs at least 2 per held-out class: add images or change --n-ood"
            )
    return split


def prepare(run: Run, cfg: ClassifyConfig, dataset: Dataset | None = None, spec: str | None = None) -> Prepared:
    """Load (and pin) data, draw (and check) the course split, build the model (CUDA when present, channels-last)."""
    device = pick_device(cfg.device)
    dataset = load_run_data(run, spec if spec is not None else cfg.data, cfg.skip_corrupt, dataset, pin=False)
    split = make_split(cfg, dataset)
    run.pin_data(dataset.name, dataset.checksum, dataset.location)
    check_split(run, split)
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


@dataclass
class EpochState:
    """Where training stands inside an epoch: enough to continue it batch for batch after an interruption."""

    epoch: int  # 0-based
    order: np.ndarray  # this epoch's shuffled training indices
    next_batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # training time spent in this epoch so far, across interruptions

    @classmethod
    def start(cls, epoch: int, indices: np.ndarray, generator: torch.Generator) -> "EpochState":
        return cls(epoch, np.asarray(indices)[torch.randperm(len(indices), generator=generator).numpy()])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: DeviceImages,
    labels: np.ndarray,
    state: EpochState,
    cfg: ClassifyConfig,
    generator: torch.Generator,
    after_batch: Callable[[EpochState], None] = lambda state: None,
) -> dict[str, float]:
    """Train from ``state.next_batch`` to the end of the epoch; ``after_batch`` may checkpoint or stop."""
    model.train()
    augment = Augment() if cfg.augment else None
    done, base, t0 = state.next_batch * cfg.batch_size, state.seconds, time.perf_counter()
    with ProgressBar(len(state.order), f"epoch {state.epoch + 1}/{cfg.epochs}", unit="img", initial=done) as bar:
        for x, y in iterate_batches(images, labels, state.order[done:], cfg.batch_size, False, generator, augment):
            with autocast(images.device, cfg.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.loss_sum += loss.item() * len(y)
            state.correct += int((logits.argmax(1) == y).sum().item())
            state.seen += len(y)
            state.next_batch += 1
            state.seconds = base + time.perf_counter() - t0
            bar.advance(len(y), status=f"loss {state.loss_sum / state.seen:.3f}")
            after_batch(state)
    return {"loss": state.loss_sum / state.seen, "accuracy": state.correct / state.seen, "seconds": state.seconds}


def train_classifier(
    cfg: ClassifyConfig,
    out: str | Path,
    resume: bool = False,
    dataset: Dataset | None = None,
    checkpoint_minutes: float = 5.0,
) -> Run:
    """Train with early stopping into the run folder ``out``; the best epoch's weights end in best.pt.

    A checkpoint is written every ``checkpoint_minutes`` inside an epoch and when SIGINT/SIGTERM
    arrives (then :class:`TrainingInterrupted` is raised after the save).
    """
    cfg.validate()
    run = Run(out)
    if run.last_checkpoint.exists() and not resume:
        raise FileExistsError(f"{run.root} already holds a training run; pass --resume to continue it or choose another folder")
    with run.lock():
        if run.exists():
            run.write_config(cfg)  # a resumed run: refuses other options (naming them) before any work
        p = prepare(run, cfg, dataset)
        run.write_config(cfg)  # only once data, split and options are known to be good
        return _train(run, cfg, p, resume, checkpoint_minutes)


def _train(run: Run, cfg: ClassifyConfig, p: Prepared, resume: bool, checkpoint_minutes: float) -> Run:
    labels = p.labels
    optimizer = build_optimizer("adam_amsgrad", p.model.parameters(), cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    stopper, history, start, partial = EarlyStopping(cfg.patience), [], 0, None
    if resume and run.last_checkpoint.exists():
        state = load_checkpoint(run.last_checkpoint, p.model, optimizer, generator, restore_rng=True)
        stopper, history, start = EarlyStopping.from_state(state["early_stopping"]), state["history"], state["epoch"] + 1
        partial = EpochState(**state["in_epoch"]) if state.get("in_epoch") else None
        where = f"epoch {partial.epoch + 1}, batch {partial.next_batch}" if partial else f"the end of epoch {start}"
        console.print(f"resuming {run.root} from {where} (best epoch so far: {stopper.best_epoch})")

    timer, last_status = CheckpointTimer(checkpoint_minutes), [0.0]
    n_batches = -(-len(p.split.train) // cfg.batch_size)

    def checkpoint(completed_epoch: int, in_epoch: EpochState | None) -> None:
        save_checkpoint(run.last_checkpoint, p.model, optimizer, generator, epoch=completed_epoch, history=history,
                        early_stopping=stopper.state_dict(), in_epoch=in_epoch.to_dict() if in_epoch else None)  # fmt: skip
        timer.reset()

    with GracefulStop() as stop:

        def after_batch(state: EpochState) -> None:
            if stop.requested or timer.due():
                checkpoint(state.epoch - 1, state)
            if stop.requested:
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(stop.signum).name} in epoch {state.epoch + 1}, after batch "
                    f"{state.next_batch}/{n_batches}; checkpoint written to {run.last_checkpoint}", stop.signum)  # fmt: skip
            if time.monotonic() - last_status[0] >= STATUS_EVERY_S:
                last_status[0] = time.monotonic()
                rate = (state.next_batch * cfg.batch_size) / max(state.seconds, 1e-9)
                run.write_progress("training", epoch=state.epoch + 1, epochs=cfg.epochs, batch=state.next_batch,
                                   batches=n_batches, images_per_s=rate,
                                   epoch_eta_s=(len(state.order) - state.seen) / max(rate, 1e-9))  # fmt: skip

        for epoch in range(start, cfg.epochs):
            if stopper.stopped:
                break
            es = partial if partial is not None and partial.epoch == epoch else EpochState.start(epoch, p.split.train, generator)
            partial = None
            tr = train_one_epoch(p.model, optimizer, p.images, labels, es, cfg, generator, after_batch)
            run.write_progress("validation", epoch=epoch + 1, epochs=cfg.epochs)
            va = evaluate_classifier(p.model, p.images, labels, p.split.val, cfg.eval_batch_size, cfg.bf16)
            history.append({
                "epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                "val_loss": va["loss"], "val_accuracy": va["accuracy"], "val_top5": va["top5"],
                "seconds": tr["seconds"], "images_per_s": len(p.split.train) / tr["seconds"],
            })  # fmt: skip
            if stopper.step(epoch + 1, va["loss"]):
                save_checkpoint(run.best_checkpoint, p.model, epoch=epoch)  # weights only: no optimiser state
            checkpoint(epoch, None)
            _write_history(run, history)
            console.print(
                f"epoch {epoch + 1}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.3f} | "
                f"val loss {va['loss']:.4f} acc {va['accuracy']:.3f} top5 {va['top5']:.3f} | {history[-1]['images_per_s']:.0f} img/s"
            )
            if stop.requested:
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(stop.signum).name} after epoch {epoch + 1}; checkpoint written to "
                    f"{run.last_checkpoint}", stop.signum)  # fmt: skip

    if stopper.stopped:
        console.print(f"early stopping: validation loss rose; keeping the weights of epoch {stopper.best_epoch} (val loss {stopper.best:.4f})")
    run.update_metrics("training", {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
                                    "epochs_run": len(history), "stopped_early": stopper.stopped})  # fmt: skip
    run.write_progress("trained", epochs_run=len(history), best_epoch=stopper.best_epoch)
    return run


def _write_history(run: Run, history: list[dict[str, Any]]) -> None:
    io.write_json(run.history_path, history)
    io.write_csv(run.root / "history.csv", history)
    from neuralcodes.plots.training import (
        plot_history,  # matplotlib is slow to import; only when writing
    )

    plot_history(history, run.figures / "training_curves.png")


def load_trained(run: Run, device: str | None = None, which: str = "best") -> tuple[NeuralCodesConvNet, ClassifyConfig]:
    """The trained ConvNet of a run (best epoch by default), in eval mode."""
    cfg = ClassifyConfig.from_dict(run.config())
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
    run: Run, dataset: Dataset | None = None, device: str | None = None, data: str | None = None
) -> tuple[Prepared, ClassifyConfig]:
    """A trained run ready to be measured: its best model, (pinned) data, course split and device-resident images.

    ``data`` points the run at its data when it has moved (verified by checksum against the run's record).
    """
    model, cfg = load_trained(run, device)
    dataset = load_run_data(run, data_spec(run, cfg.data, data), cfg.skip_corrupt, dataset)
    split = make_split(cfg, dataset)
    check_split(run, split)
    dev = next(model.parameters()).device
    return Prepared(dataset, split, DeviceImages(dataset.train.images, dev), model, dev), cfg


@register_backbone("convnet")
def convnet_backbone(pretrained: bool, weights: str | Path | None, image_size: int) -> torch.nn.Module:
    """The ConvNet of a ``neuralcodes train`` run (``weights``: the run folder) up to its L7 code."""
    if weights is None:
        raise ValueError("the convnet backbone is initialised from a `neuralcodes train` run: pass --weights RUN")
    model, _ = load_trained(Run(weights), device="cpu")
    return ConvNetBackbone(model.train())
