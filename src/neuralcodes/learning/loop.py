"""A resumable epoch loop with early stopping, for recipes whose step is not the classification step.

The recipe supplies three functions: ``plan(epoch, generator)`` (the epoch's image indices, in
batch order), ``step(indices)`` (one optimiser step; returns per-batch figures such as the loss)
and ``validate()`` (figures on held-back data, one of which is ``monitor``). :func:`fit` does the
rest as the classification recipe does: a checkpoint (weights, optimiser, RNG states, history,
early stopping, and the position inside the epoch) at the end of every epoch, every
``checkpoint_minutes`` inside one, and on SIGINT/SIGTERM; ``resume=True`` continues from the very
batch, so a resumed run ends with the weights of an uninterrupted one. The best epoch's weights
go to ``best.pt``.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from neuralcodes import io
from neuralcodes.learning.checkpoint import load_checkpoint, save_checkpoint
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.interrupt import (
    CheckpointTimer,
    GracefulStop,
    TrainingInterrupted,
)
from neuralcodes.progress import ProgressBar, console
from neuralcodes.runs import Run

STATUS_EVERY_S = 1.0


@dataclass
class InEpoch:
    """Where training stands inside an epoch: its planned order, the next batch, running sums."""

    epoch: int  # 0-based
    order: np.ndarray
    next_batch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class Loop:
    run: Run
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # every random draw of plan and step: restored on resume
    plan: Callable[[int, torch.Generator], np.ndarray]
    step: Callable[[np.ndarray], dict[str, float]]
    validate: Callable[[], dict[str, float]]
    epochs: int
    batch_size: int
    monitor: str  # a key of validate()'s figures
    mode: str = "min"  # "max": higher is better (a mAP)
    patience: int = 0
    checkpoint_minutes: float = 5.0
    validate_start: bool = False  # score the starting weights as epoch 0 (they may stay the best)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best: float
    stopped_early: bool


def fit(loop: Loop, resume: bool = False, on_epoch: Callable[[list[dict]], None] = lambda history: None) -> FitResult:
    """Train ``loop`` to its last epoch or until early stopping; ``on_epoch(history)`` after each epoch."""
    run, sign = loop.run, (1.0 if loop.mode == "min" else -1.0)
    stopper, history, start, partial = EarlyStopping(loop.patience), [], 0, None
    if resume and run.last_checkpoint.exists():
        state = load_checkpoint(run.last_checkpoint, loop.model, loop.optimizer, loop.generator, restore_rng=True)
        stopper, history, start = EarlyStopping.from_state(state["early_stopping"]), state["history"], state["epoch"] + 1
        partial = InEpoch(**state["in_epoch"]) if state.get("in_epoch") else None
        where = f"epoch {partial.epoch + 1}, batch {partial.next_batch}" if partial else f"the end of epoch {start}"
        console.print(f"resuming {run.root} from {where} (best epoch so far: {stopper.best_epoch})")
    timer, last_status = CheckpointTimer(loop.checkpoint_minutes), [0.0]

    def checkpoint(completed_epoch: int, in_epoch: InEpoch | None) -> None:
        save_checkpoint(run.last_checkpoint, loop.model, loop.optimizer, loop.generator, epoch=completed_epoch,
                        history=history, early_stopping=stopper.state_dict(),
                        in_epoch=asdict(in_epoch) if in_epoch else None)  # fmt: skip
        timer.reset()

    def record(epoch: int, figures: dict[str, Any], scores: dict[str, float]) -> None:
        history.append({"epoch": epoch, **figures, **scores})
        if stopper.step(epoch, sign * scores[loop.monitor]):
            save_checkpoint(run.best_checkpoint, loop.model, epoch=epoch)  # weights only
        io.write_json(run.history_path, history)
        io.write_csv(run.root / "history.csv", history)
        on_epoch(history)

    if start == 0 and partial is None and loop.validate_start and not history:
        run.write_progress("validation", epoch=0, epochs=loop.epochs)
        record(0, {}, loop.validate())
        console.print(f"start: {loop.monitor} {history[-1][loop.monitor]:.4f}")
        checkpoint(-1, None)

    with GracefulStop() as stop:
        for epoch in range(start, loop.epochs):
            if stopper.stopped:
                break
            state = partial if partial is not None and partial.epoch == epoch else InEpoch(epoch, loop.plan(epoch, loop.generator))
            partial = None
            _train_epoch(loop, state, stop, checkpoint, last_status, timer)
            run.write_progress("validation", epoch=epoch + 1, epochs=loop.epochs)
            figures = {f"train_{k}": v / max(state.steps, 1) for k, v in state.sums.items()}
            figures.update(seconds=state.seconds, images_per_s=state.seen / max(state.seconds, 1e-9))
            record(epoch + 1, figures, loop.validate())
            checkpoint(epoch, None)
            console.print(f"epoch {epoch + 1}/{loop.epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in history[-1].items() if k not in ("epoch", "seconds") and isinstance(v, float)))
            if stop.requested:
                raise TrainingInterrupted(f"stopped by {signal.Signals(stop.signum).name} after epoch {epoch + 1}; "
                                          f"checkpoint written to {run.last_checkpoint}", stop.signum)  # fmt: skip
    if stopper.stopped:
        console.print(f"early stopping: keeping the weights of epoch {stopper.best_epoch} ({loop.monitor} {sign * stopper.best:.4f})")
    return FitResult(history, stopper.best_epoch, sign * stopper.best, stopper.stopped)


def _train_epoch(loop: Loop, state: InEpoch, stop: GracefulStop, checkpoint: Callable, last_status: list[float],
                 timer: CheckpointTimer) -> None:  # fmt: skip
    n_batches = -(-len(state.order) // loop.batch_size)
    base, t0 = state.seconds, time.perf_counter()
    loop.model.train()
    label = f"epoch {state.epoch + 1}/{loop.epochs}"
    with ProgressBar(len(state.order), label, unit="img", initial=state.next_batch * loop.batch_size) as bar:
        while state.next_batch < n_batches:
            idx = state.order[state.next_batch * loop.batch_size : (state.next_batch + 1) * loop.batch_size]
            figures = loop.step(idx)
            for k, v in figures.items():
                state.sums[k] = state.sums.get(k, 0.0) + float(v)
            state.steps, state.seen, state.next_batch = state.steps + 1, state.seen + len(idx), state.next_batch + 1
            state.seconds = base + time.perf_counter() - t0
            bar.advance(len(idx), status=", ".join(f"{k} {v / state.steps:.3f}" for k, v in state.sums.items()))
            stopping = stop.requested  # read once: a signal landing in between is handled after the next batch
            if stopping or timer.due():
                checkpoint(state.epoch - 1, state)
            if stopping:
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(stop.signum).name} in epoch {state.epoch + 1}, after batch "
                    f"{state.next_batch}/{n_batches}; checkpoint written to {loop.run.last_checkpoint}", stop.signum)  # fmt: skip
            if time.monotonic() - last_status[0] >= STATUS_EVERY_S:
                last_status[0] = time.monotonic()
                rate = state.seen / max(state.seconds, 1e-9)
                loop.run.write_progress("training", epoch=state.epoch + 1, epochs=loop.epochs, batch=state.next_batch,
                                        batches=n_batches, images_per_s=rate,
                                        epoch_eta_s=(len(state.order) - state.next_batch * loop.batch_size) / max(rate, 1e-9))  # fmt: skip
