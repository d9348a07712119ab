"""The classification training loop (fits on a screen), resumable from any batch, on one or several processes.

Checkpoints (weights, optimiser, RNG states of every process, history, the position inside the
epoch) are written atomically at the end of every epoch, every ``checkpoint_minutes`` inside an
epoch, and when SIGINT/SIGTERM arrives, so a resumed run ends with the very weights of an
uninterrupted one. Under torchrun every process trains on its shard of each global batch; only
the first process writes.
"""
from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from neuralcodes import io
from neuralcodes.data.batches import Augment, DeviceImages, iterate_batches
from neuralcodes.device import autocast, describe_machine
from neuralcodes.learning.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from neuralcodes.learning.distributed import World, any_over, gather, sum_over
from neuralcodes.learning.early_stopping import EarlyStopping
from neuralcodes.learning.interrupt import CheckpointTimer, GracefulStop, TrainingInterrupted
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.progress import ProgressBar, console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run

STATUS_EVERY_S = 1.0  # progress.json is rewritten at most this often (a few hundred bytes)


@dataclass
class EpochState:
    """Where training stands inside an epoch: enough to continue it batch for batch after an interruption.

    The sums are this process's own (its shards); an epoch's figures add them over processes.
    """

    epoch: int  # 0-based
    order: np.ndarray  # this epoch's shuffled training indices (the same on every process)
    next_batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # training time spent in this epoch so far, across interruptions

    @classmethod
    def start(cls, epoch: int, indices: np.ndarray, generator: torch.Generator) -> "EpochState":
        return cls(epoch, np.asarray(indices)[torch.randperm(len(indices), generator=generator).numpy()])


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: DeviceImages,
    labels: np.ndarray,
    state: EpochState,
    cfg: ClassifyConfig,
    generator: torch.Generator,
    after_batch: Callable[[EpochState], None] = lambda state: None,
    world: World = World(),
) -> None:
    """Train from ``state.next_batch`` to the end of the epoch; ``after_batch`` may checkpoint or stop."""
    model.train()
    augment = Augment() if cfg.augment else None
    done, base, t0 = state.next_batch * cfg.batch_size, state.seconds, time.perf_counter()
    batches = iterate_batches(images, labels, state.order[done:], cfg.batch_size, False, generator, augment, world.shard)
    with ProgressBar(len(state.order), f"epoch {state.epoch + 1}/{cfg.epochs}", unit="img", initial=done) as bar:
        for x, y in batches:
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
            bar.advance(len(y) * world.size, status=f"loss {state.loss_sum / state.seen:.3f}")
            after_batch(state)


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


def fit(run: Run, cfg: ClassifyConfig, p: Any, resume: bool, checkpoint_minutes: float, world: World = World()) -> None:
    """Train ``p.model`` on ``p.split.train`` with early stopping on ``p.split.val`` (``p``: a prepared run)."""
    model = DistributedDataParallel(p.model) if world.size > 1 else p.model
    optimizer = build_optimizer("adam_amsgrad", p.model.parameters(), cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    stopper, history, start, partial = EarlyStopping(cfg.patience), [], 0, None
    if resume and run.last_checkpoint.exists():
        state = load_checkpoint(run.last_checkpoint, p.model, optimizer)
        if state.get("world_size", 1) != world.size:
            raise ValueError(f"{run.last_checkpoint} was written by {state.get('world_size', 1)} process(es); "
                             f"resume it with as many (this is {world.size})")  # fmt: skip
        own = state if world.is_main else state["ranks"][world.rank - 1]
        set_rng_state(own["rng"], generator)
        stopper, history, start = EarlyStopping.from_state(state["early_stopping"]), state["history"], state["epoch"] + 1
        partial = EpochState(**own["in_epoch"]) if own.get("in_epoch") else None
        where = f"epoch {partial.epoch + 1}, batch {partial.next_batch}" if partial else f"the end of epoch {start}"
        console.print(f"resuming {run.root} from {where} (best epoch so far: {stopper.best_epoch})")

    timer, last_status = CheckpointTimer(checkpoint_minutes), [0.0]
    n_batches = -(-len(p.split.train) // cfg.batch_size)

    def checkpoint(completed_epoch: int, in_epoch: EpochState | None) -> None:
        mine = {"rng": rng_state(generator), "in_epoch": asdict(in_epoch) if in_epoch else None}
        states = gather(world, mine)  # every process's RNG and sums; the first process writes them all
        if world.is_main:
            save_checkpoint(run.last_checkpoint, p.model, optimizer, generator, epoch=completed_epoch, history=history,
                            early_stopping=stopper.state_dict(), in_epoch=mine["in_epoch"], ranks=states[1:],
                            world_size=world.size)  # fmt: skip
        timer.reset()

    def stopped(signum: int, where: str) -> TrainingInterrupted:
        name = signal.Signals(signum).name
        return TrainingInterrupted(f"stopped by {name} {where}; checkpoint written to {run.last_checkpoint}", signum)

    with GracefulStop() as stop:

        def after_batch(state: EpochState) -> None:
            stop_now, save_now = any_over(world, stop.requested, timer.due(), device=p.device)  # one decision for all
            if stop_now or save_now:
                checkpoint(state.epoch - 1, state)
            if stop_now:
                raise stopped(stop.signum or signal.SIGTERM, f"in epoch {state.epoch + 1}, after batch {state.next_batch}/{n_batches}")
            if world.is_main and time.monotonic() - last_status[0] >= STATUS_EVERY_S:
                last_status[0] = time.monotonic()
                rate = state.next_batch * cfg.batch_size / max(state.seconds, 1e-9)
                run.write_progress("training", epoch=state.epoch + 1, epochs=cfg.epochs, batch=state.next_batch,
                                   batches=n_batches, images_per_s=rate,
                                   epoch_eta_s=(len(state.order) - state.next_batch * cfg.batch_size) / max(rate, 1e-9))  # fmt: skip

        for epoch in range(start, cfg.epochs):
            if stopper.stopped:
                break
            es = partial if partial is not None and partial.epoch == epoch else EpochState.start(epoch, p.split.train, generator)
            partial = None
            train_one_epoch(model, optimizer, p.images, p.labels, es, cfg, generator, after_batch, world)
            loss_sum, correct, seen = sum_over(world, es.loss_sum, es.correct, es.seen)
            if world.is_main:
                run.write_progress("validation", epoch=epoch + 1, epochs=cfg.epochs)
            va = evaluate_classifier(p.model, p.images, p.labels, p.split.val, cfg.eval_batch_size, cfg.bf16, world)
            history.append({
                "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "val_loss": va["loss"], "val_accuracy": va["accuracy"], "val_top5": va["top5"],
                "seconds": es.seconds, "images_per_s": len(p.split.train) / es.seconds,
            })  # fmt: skip
            if stopper.step(epoch + 1, va["loss"]) and world.is_main:
                save_checkpoint(run.best_checkpoint, p.model, epoch=epoch)  # weights only: no optimiser state
            checkpoint(epoch, None)
            if world.is_main:
                write_history(run, history)
            h = history[-1]
            console.print(f"epoch {epoch + 1}: train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.3f} | val loss "
                          f"{h['val_loss']:.4f} acc {h['val_accuracy']:.3f} top5 {h['val_top5']:.3f} | {h['images_per_s']:.0f} img/s")  # fmt: skip
            if any_over(world, stop.requested, device=p.device)[0]:
                raise stopped(stop.signum or signal.SIGTERM, f"after epoch {epoch + 1}")

    if stopper.stopped:
        console.print(f"early stopping: validation loss rose; keeping the weights of epoch {stopper.best_epoch} (val loss {stopper.best:.4f})")
    if world.is_main:
        run.update_metrics("training", {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
                                        "epochs_run": len(history), "stopped_early": stopper.stopped,
                                        "processes": world.size, "machine": describe_machine()})  # fmt: skip
        run.write_progress("trained", epochs_run=len(history), best_epoch=stopper.best_epoch)


def write_history(run: Run, history: list[dict[str, Any]]) -> None:
    io.write_json(run.history_path, history)
    io.write_csv(run.root / "history.csv", history)
    from neuralcodes.plots.training import plot_history  # matplotlib is slow to import: only when writing

    plot_history(history, run.figures / "training_curves.png")
