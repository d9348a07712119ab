"""One training loop for every recipe (it fits on a screen): resumable from any batch, on one or several processes.

The recipe gives ``plan(epoch, generator)`` (the epoch's items in batch order), ``step(items)`` (one
optimiser step on this process's shard of a batch; returns figures to add up over the epoch) and
``validate()`` (figures on held-back data, one of which is ``monitor``). :func:`fit` does the rest:
a checkpoint (weights, optimiser, every process's RNG, history, early stopping, the position inside
the epoch) at the end of every epoch, every ``checkpoint_minutes`` inside one and on SIGINT/SIGTERM,
so ``resume=True`` continues from the very batch to the weights of an uninterrupted run; the best
epoch's weights go to ``best.pt``. Under torchrun (``world``) each process steps on its shard of every
global batch, all take one decision on checkpointing and stopping, the epoch's sums are added over
them, and the first process writes (see :mod:`neuralcodes.learning.resume`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuralcodes import io
from neuralcodes.learning.checkpoint import save_checkpoint
from neuralcodes.learning.distributed import World, any_over, from_main, sum_over
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.interrupt import CheckpointTimer, GracefulStop, TrainingInterrupted
from neuralcodes.learning.resume import InEpoch, restore_last, save_last
from neuralcodes.progress import ProgressBar, console
from neuralcodes.runs import Run

__all__ = ["FitResult", "InEpoch", "Loop", "fit", "mean_per_step", "run_epoch"]

STATUS_EVERY_S = 1.0  # progress.json is rewritten at most this often
Step = Callable[[np.ndarray], dict[str, float]]
AfterBatch = Callable[[InEpoch], None]


def mean_per_step(totals: dict[str, float]) -> dict[str, float]:
    """The default epoch figures: each figure of the step averaged over the steps, as ``train_<figure>``."""
    return {
        f"train_{k}": v / max(totals["steps"], 1)
        for k, v in totals.items()
        if k not in ("steps", "seen")
    }


@dataclass
class Loop:
    run: Run
    model: torch.nn.Module  # the bare model, not a DDP wrapper: checkpoints hold its weights
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # every random draw of plan and step: restored on resume
    plan: Callable[[int, torch.Generator], np.ndarray]
    step: Step
    validate: Callable[[], dict[str, float]]
    epochs: int
    batch_size: int
    monitor: (
        str | None
    )  # a key of validate()'s figures; None: no model selection (no best.pt, no early stopping)
    mode: str = "min"  # "max": higher is better (a mAP)
    patience: int = 0
    checkpoint_minutes: float = 5.0
    validate_start: bool = False  # score the starting weights as epoch 0 (they may stay the best)
    world: World = World()
    # The epoch's training figures from its totals: the step's sums, "steps" and "seen", added over processes.
    summarise: Callable[[dict[str, float]], dict[str, float]] = mean_per_step
    unit: str = "images"  # what plan's items are: the progress bar's unit; the history's rate is <unit>_per_s
    stateful: dict[str, Any] = field(
        default_factory=dict
    )  # more to checkpoint: objects with state_dict / load_state_dict
    upgrade: Callable[[dict], dict] | None = (
        None  # an older checkpoint layout of the recipe -> today's
    )

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best: float
    stopped_early: bool


def fit(
    loop: Loop, resume: bool = False, on_epoch: Callable[[list[dict]], None] | None = None
) -> FitResult:
    """Train ``loop`` to its last epoch or until early stopping. After every epoch the first process calls
    ``on_epoch(history)`` (default: history.json / history.csv and a console line)."""
    run, world, sign = loop.run, loop.world, (1.0 if loop.mode == "min" else -1.0)
    stopper, history, start, partial = EarlyStopping(loop.patience), [], 0, None
    if resume and run.last_checkpoint.exists():
        payload, partial = restore_last(
            run.last_checkpoint, loop.model, loop.optimizer, loop.generator, world, loop.upgrade
        )
        stopper, history, start = (
            EarlyStopping.from_state(payload["early_stopping"]),
            payload["history"],
            payload["epoch"] + 1,
        )
        for key, obj in loop.stateful.items():
            obj.load_state_dict(payload[key])
        where = (
            f"epoch {partial.epoch + 1}, batch {partial.next_batch}"
            if partial
            else f"the end of epoch {start}"
        )
        console.print(f"resuming {run.root} from {where} (best epoch so far: {stopper.best_epoch})")
    on_epoch = on_epoch or (lambda history: _write_and_print(run, history, loop.epochs))
    device = next(loop.model.parameters()).device  # NCCL's collectives run on the process's GPU
    timer, last_status = CheckpointTimer(loop.checkpoint_minutes), [0.0]

    def checkpoint(completed_epoch: int, in_epoch: InEpoch | None) -> None:
        save_last(
            run.last_checkpoint,
            loop.model,
            loop.optimizer,
            loop.generator,
            world,
            in_epoch,
            epoch=completed_epoch,
            history=history,
            early_stopping=stopper.state_dict(),
            **{key: obj.state_dict() for key, obj in loop.stateful.items()},
        )
        timer.reset()

    def record(epoch: int, row: dict[str, Any]) -> None:
        history.append({"epoch": epoch, **row})
        if (
            loop.monitor is not None
            and stopper.step(epoch, sign * row[loop.monitor])
            and world.is_main
        ):
            save_checkpoint(
                run.best_checkpoint, loop.model, epoch=epoch - 1
            )  # weights only; the 0-based epoch
        checkpoint(epoch - 1, None)
        if world.is_main:
            on_epoch(history)

    def interrupted(signum: int | None, where: str) -> TrainingInterrupted:
        signum = signum or signal.SIGTERM  # another process got the signal
        return TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} {where}; "
            f"checkpoint written to {run.last_checkpoint}",
            signum,
        )

    def progress(stage: str, **fields: Any) -> None:
        if world.is_main:
            run.write_progress(stage, epochs=loop.epochs, **fields)

    if start == 0 and partial is None and loop.validate_start and not history:
        progress("validation", epoch=0)
        record(0, loop.validate())

    with GracefulStop() as stop:

        def after_batch(state: InEpoch) -> None:
            # stop.requested is read before timer.due(): a signal landing in between waits for the next batch.
            stop_now, save_now = any_over(
                world, stop.requested, timer.due(), device=device
            )  # one decision for all
            if stop_now or save_now:
                checkpoint(state.epoch - 1, state)
            n_batches = -(-len(state.order) // loop.batch_size)
            if stop_now:
                raise interrupted(
                    stop.signum,
                    f"in epoch {state.epoch + 1}, after batch {state.next_batch}/{n_batches}",
                )
            if world.is_main and time.monotonic() - last_status[0] >= STATUS_EVERY_S:
                last_status[0] = time.monotonic()
                done = min(state.next_batch * loop.batch_size, len(state.order))
                rate = done / max(state.seconds, 1e-9)
                progress(
                    "training",
                    epoch=state.epoch + 1,
                    batch=state.next_batch,
                    batches=n_batches,
                    images_per_s=rate,
                    epoch_eta_s=(len(state.order) - done) / max(rate, 1e-9),
                )

        for epoch in range(start, loop.epochs):
            if stopper.stopped:
                break
            if partial is not None and partial.epoch == epoch:
                state = partial
            else:  # the first process's plan for all: the others' generators are their own (augmentation)
                state = InEpoch(epoch, from_main(world, lambda: loop.plan(epoch, loop.generator)))
            partial = None
            loop.model.train()
            run_epoch(
                state,
                loop.step,
                loop.batch_size,
                f"epoch {epoch + 1}/{loop.epochs}",
                after_batch,
                world,
                loop.summarise,
                loop.unit,
            )
            names = [*state.sums, "steps", "seen"]
            totals = dict(
                zip(
                    names,
                    sum_over(world, *state.sums.values(), state.steps, state.seen, device=device),
                )
            )
            progress("validation", epoch=epoch + 1)
            scores = loop.validate()
            record(
                epoch + 1,
                {
                    **loop.summarise(totals),
                    **scores,
                    "seconds": state.seconds,
                    f"{loop.unit}_per_s": totals["seen"] / max(state.seconds, 1e-9),
                },
            )
            if any_over(world, stop.requested, device=device)[0]:
                raise interrupted(stop.signum, f"after epoch {epoch + 1}")
    if stopper.stopped:
        console.print(
            f"early stopping: keeping the weights of epoch {stopper.best_epoch} "
            f"({loop.monitor} {sign * stopper.best:.4f})"
        )
    return FitResult(history, stopper.best_epoch, sign * stopper.best, stopper.stopped)


def run_epoch(
    state: InEpoch,
    step: Step,
    batch_size: int,
    label: str,
    after_batch: AfterBatch = lambda state: None,
    world: World = World(),
    summarise: Callable[[dict[str, float]], dict[str, float]] = mean_per_step,
    unit: str = "images",
) -> None:
    """Step through ``state.order`` from ``state.next_batch`` to the end of the epoch, this process on its
    shard of each batch (``batch_size`` is the global batch); ``after_batch`` may checkpoint or stop."""
    n_batches = -(-len(state.order) // batch_size)
    base, t0 = state.seconds, time.perf_counter()
    with ProgressBar(
        len(state.order),
        label,
        unit=unit,
        initial=min(state.next_batch * batch_size, len(state.order)),
    ) as bar:
        while state.next_batch < n_batches:
            batch = state.order[state.next_batch * batch_size : (state.next_batch + 1) * batch_size]
            mine = np.array_split(batch, world.size)[world.rank] if world.size > 1 else batch
            for k, v in step(mine).items():
                state.sums[k] = state.sums.get(k, 0.0) + float(v)
            state.steps, state.seen, state.next_batch = (
                state.steps + 1,
                state.seen + len(mine),
                state.next_batch + 1,
            )
            state.seconds = base + time.perf_counter() - t0
            figures = summarise({**state.sums, "steps": state.steps, "seen": state.seen})
            bar.advance(
                len(batch),
                status=", ".join(f"{k.removeprefix('train_')} {v:.3f}" for k, v in figures.items()),
            )
            after_batch(state)


def _write_and_print(run: Run, history: list[dict[str, Any]], epochs: int) -> None:
    io.write_json(run.history_path, history)
    io.write_csv(run.root / "history.csv", history)
    figures = ", ".join(
        f"{k} {v:.4f}"
        for k, v in history[-1].items()
        if k not in ("epoch", "seconds") and isinstance(v, float)
    )
    console.print(f"epoch {history[-1]['epoch']}/{epochs}: {figures}")
