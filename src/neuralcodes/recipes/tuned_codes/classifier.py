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

from neuralcodes.data.batches import Augment, DeviceImages
from neuralcodes.data.imageset import Dataset
from neuralcodes.device import autocast, describe_machine, pick_device
from neuralcodes.learning.distributed import World, barrier, distribute, init_world, process_seed
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.loop import Loop, fit
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.neural_codes.loop import evaluate_classifier
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
    world, device = init_world(pick_device(cfg.device))
    if not world.is_main:  # the first process checks and records the data; the others then only verify
        barrier(world)
        _fit(run, cfg, _prepare(run, cfg, dataset, device), resume, checkpoint_minutes, world)
        return run
    with run.lock():
        if run.exists():
            run.write_config(cfg, may_change=("epochs",))  # a resumed run: refuses other options before any work
        prepared = _prepare(run, cfg, dataset, device)
        run.write_config(cfg)
        barrier(world)
        _fit(run, cfg, prepared, resume, checkpoint_minutes, world)
    return run


def _prepare(run: Run, cfg: ClassifierConfig, dataset: Dataset | None, device: torch.device) -> Prepared:
    dataset = load_run_data(run, cfg.data, cfg.skip_corrupt, dataset, pin=False)
    split = make_split(cfg, dataset)
    run.pin_data(dataset.name, dataset.checksum, dataset.location)
    check_split(run, split)
    torch.manual_seed(cfg.seed)
    model = MapClassifier(split.n_in_domain, cfg.arch).to(device, memory_format=torch.channels_last)
    return Prepared(dataset, split, DeviceImages(dataset.train.images, device), model, device)


def _fit(run: Run, cfg: ClassifierConfig, p: Prepared, resume: bool, checkpoint_minutes: float, world: World) -> None:
    model = distribute(p.model, world)
    labels = p.split.in_domain_labels(p.dataset.train.labels)
    labels_t = torch.as_tensor(labels, device=p.device)
    optimizer = build_optimizer("adam_amsgrad", p.model.parameters(), cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(process_seed(cfg.seed, world))  # order (first process's) + augmentation
    if world.rank:
        torch.manual_seed(process_seed(cfg.seed, world))  # its own dropout masks
    augment = Augment() if cfg.augment else None

    def plan(epoch: int, g: torch.Generator) -> np.ndarray:
        return p.split.train[torch.randperm(len(p.split.train), generator=g).numpy()]

    def step(idx: np.ndarray) -> dict[str, float]:
        x = p.images.batch(idx)
        if augment is not None:
            x = augment(x, generator)
        y = labels_t[torch.as_tensor(idx, device=p.device)]
        with autocast(p.device, cfg.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

    def validate() -> dict[str, float]:
        scores = evaluate_classifier(p.model, p.images, labels, p.split.val, cfg.eval_batch_size, cfg.bf16, world)
        return {f"val_{k}": v for k, v in scores.items()}

    loop = Loop(run, p.model, optimizer, generator, plan, step, validate, epochs=cfg.epochs, batch_size=cfg.batch_size,
                monitor="val_loss", mode="min", patience=cfg.patience, checkpoint_minutes=checkpoint_minutes,
                world=world)  # fmt: skip
    result = fit(loop, resume)
    if world.is_main:
        run.update_metrics("training", {"best_epoch": result.best_epoch, "best_val_loss": result.best,
                                        "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                                        "processes": world.size, "machine": describe_machine()})  # fmt: skip
        run.write_progress("trained", epochs_run=len(result.history), best_epoch=result.best_epoch)


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
