"""Fine-tuning a classifier for retrieval (Radenovic, Tolias & Chum): GeM codes trained with a metric loss.

The base's head is replaced by GeM (+ an optional whitening layer fitted on in-domain training
codes) + L2 normalisation; batches hold m images of each of several in-domain training classes
(:func:`neuralcodes.learning.samplers.m_per_class_order`); the triplet (or contrastive) loss
(:mod:`neuralcodes.learning.losses`) trains on the batch's triplets that violate the margin, averaged over
those (or only on the semi-hard or hard ones its miner picks, :mod:`neuralcodes.learning.miners`).
Beside that loss every step logs what all the batch's triplets look like
(:func:`neuralcodes.learning.diagnostics.triplet_diagnostics`: the fraction still violating the margin, the
mean over all of them, mean D(a, p), D(a, n), their gap, the batch's spread), because the active-triplet
mean alone tends to the margin whether or not the network learns (see "Why the loss sits at the margin" below).
Model selection and early stopping read the leave-one-out mAP of in-domain *validation* images;
the held-out classes are never read (a test trains with their labels and pixels replaced by
garbage and gets the same weights).

    RUN/config.json  data.json  split.json   TunedConfig, the base's data (pinned), its split
    RUN/history.json / history.csv           per epoch: loss, triplet figures, p, validation mAP / mAP@R / P@10
    RUN/metrics.json "tuned"                 start and best validation mAP, best epoch, p, base
    RUN/checkpoints/{last,best}.pt           resume state (mid-epoch too); the best weights

Why the loss sits at the margin (measured on the embedded sample: a ConvNet base trained 14 epochs, then
batches of 4 x 20 classes, 20 per epoch, 8 epochs, mining all, margin 0.1). The loss is the mean of
g + D(a, p) - D(a, n) over the violating triplets only, i.e. g - (mean gap D(a, n) - D(a, p) of those), so it
reads g whenever the violators' gaps average 0, whatever the others do. Neither collapse nor stagnation: the
codes *contract* in epoch 1 (mean distance of two codes 0.65 at the start, 0.31 over epoch 1, 0.14 in epoch
2; a hinge over badly ordered triplets costs less when every distance shrinks), after which nearly every
triplet costs about g (86% violate it in epoch 2, against 53% at the start) and the loss reads 0.096-0.102
from epoch 2 to 8. Under it the network learns: the spread grows back to 0.19-0.20, the mean gap over all
triplets grows from 0.023 (epoch 2) to 0.042 (epoch 8), the violating fraction falls (0.87 -> 0.76), the mean
over all triplets falls (0.083 -> 0.075), and validation mAP climbs 0.120 -> 0.162 (0.109 at the start). On
the same 20 batches, start -> after epoch 8: gap / spread 0.13 -> 0.25, mean over all triplets 0.130 -> 0.068,
the violators' mean gap -0.146 -> +0.005 (so their mean loss 0.246 -> 0.095). The published full run (loss
0.1003-0.1008 from epoch 2 while validation mAP rose 0.052 -> 0.076) has the same loss signature (its triplet
figures were not logged then: a rerun shows them); its +0.000 on the held-out classes then points to codes
that improve on the in-domain classes and do not transfer, not to a loss that stopped learning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
)

from neuralcodes.data.imageset import Dataset
from neuralcodes.device import autocast, describe_machine, pick_device
from neuralcodes.layers.pooling import build_pooling
from neuralcodes.layers.whitening import learned_whitening, pca_whitening, whitening_shrinkage
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.diagnostics import triplet_diagnostics
from neuralcodes.learning.distributed import (
    World,
    barrier,
    distribute,
    from_main,
    gather_rows,
    init_world,
    process_seed,
)
from neuralcodes.learning.losses import contrastive_loss, triplet_loss
from neuralcodes.learning.loop import FitResult, Loop, fit
from neuralcodes.learning.miners import get_batch_miner
from neuralcodes.learning.optimizers import OPTIMIZERS
from neuralcodes.learning.samplers import m_per_class_order
from neuralcodes.recipes.run_data import check_split
from neuralcodes.recipes.tuned_codes.augment import RetrievalAugment
from neuralcodes.recipes.tuned_codes.base import Base, open_base
from neuralcodes.recipes.tuned_codes.config import TunedConfig
from neuralcodes.recipes.tuned_codes.network import RetrievalNet
from neuralcodes.retrieval.codes import extract_codes
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.runs import TRAINS_ON, Run

FIT_SEED_KEY, VAL_SEED_KEY = 1, 2

# The reduction, chosen (it was pml's default before it was named here): "active", the mean over the triplets
# (pairs) that violate the margin. With mining "all" a batch of 120 codes holds ~40,000 triplets and most are
# satisfied early; dividing by the ones still violating keeps each step's size on them instead of shrinking it
# as the batch is satisfied (an implicit hard mining), and it is what every published tuned run and the
# recipe's sample numbers were measured with. Mined semi-hard / hard triplets all violate the margin, so
# there it equals the mean. Its figure is no measure of progress (it tends to the margin): step() logs
# triplet_diagnostics beside it.
REDUCER = "active"


def build_objective(
    cfg: TunedConfig, world: World = World()
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The loss and in-batch miner (None: every triplet / pair of the batch), from :mod:`neuralcodes.learning`.

    On several processes both see the whole batch: pytorch-metric-learning's wrappers gather every
    process's codes, and the loss (of the whole batch, times the number of processes, its gradient
    flowing only into this process's codes) makes DistributedDataParallel's average the one-process
    gradient. Without them each process would only compare its own shard's images.
    """
    margin = cfg.resolved_margin
    loss = (
        triplet_loss(margin, reducer=REDUCER)
        if cfg.loss == "triplet"
        else contrastive_loss(pos_margin=0.0, neg_margin=margin, reducer=REDUCER)
    )
    miner = get_batch_miner(cfg.mining, margin)
    if world.size > 1:
        loss = DistributedLossWrapper(loss)
        miner = DistributedMinerWrapper(miner) if miner is not None else None
    return loss, miner


def subset(indices: np.ndarray, n: int, seed: int, key: int) -> np.ndarray:
    """At most ``n`` of ``indices`` (sorted), drawn with a seed of their own."""
    if len(indices) <= n:
        return np.sort(indices)
    return np.sort(np.random.default_rng([seed, key]).choice(indices, size=n, replace=False))


def queryable(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``indices`` without the images that are alone in their class (nothing to retrieve for them)."""
    _, inverse, counts = np.unique(labels[indices], return_inverse=True, return_counts=True)
    kept = indices[counts[inverse] >= 2]
    if len(np.unique(labels[kept])) < 2:
        raise ValueError(
            f"the {len(indices)} validation images hold fewer than 2 classes with 2 images each: "
            "raise --val-images (or use data with more validation images)"
        )
    return kept


def build_network(cfg: TunedConfig, base: Base, fit_whitening: bool = True) -> RetrievalNet:
    """GeM (or MAC / SPoC) on the base's map; the whitening layer fitted on in-domain training codes
    (``fit_whitening=False``: only shaped, for weights loaded next)."""
    net = RetrievalNet(
        base.feature_map, build_pooling(cfg.pooling, cfg.p, cfg.learn_p), None, cfg.freeze_bn
    )
    net = net.to(base.device)
    if cfg.whitening == "none":
        return net
    if not fit_whitening:
        dim = cfg.whiten_dim or net.dim
        net.whitening = torch.nn.Linear(net.dim, dim).to(base.device)
        return net
    idx = subset(base.split.train, cfg.whiten_images, cfg.seed, FIT_SEED_KEY)
    codes = extract_codes(
        net, base.images, idx, "pooled", batch_size=cfg.eval_batch_size, autocast=cfg.bf16
    )["pooled"]
    pca_shrink, learned_shrink = whitening_shrinkage(*codes.shape)
    if cfg.whitening == "pca":
        layer = pca_whitening(codes, cfg.whiten_dim, shrinkage=pca_shrink)
    else:
        layer = learned_whitening(codes, base.labels[idx], cfg.whiten_dim, shrinkage=learned_shrink)
    net.whitening = layer.to(base.device)
    return net


def validation_scores(
    net: RetrievalNet, base: Base, indices: np.ndarray, cfg: TunedConfig
) -> dict[str, float]:
    """Leave-one-out retrieval among in-domain validation images."""
    codes = extract_codes(
        net, base.images, indices, "code", batch_size=cfg.eval_batch_size, autocast=cfg.bf16
    )["code"]
    k = min(10, len(indices) - 1)
    m = retrieval_metrics(codes, base.labels[indices], ks=(k,))
    return {"val_mAP": m["mAP"], "val_mAP@R": m["mAP@R"], f"val_P@{k}": m[f"P@{k}"]}


def train_tuned(
    cfg: TunedConfig,
    out: str | Path,
    resume: bool = False,
    dataset: Dataset | None = None,
    checkpoint_minutes: float = 5.0,
) -> Run:
    """Fine-tune ``cfg.base`` into the run folder ``out`` (``resume=True`` continues it); under torchrun
    every process takes its shard of each batch and the loss sees the whole batch's codes."""
    cfg.validate()
    run = Run(out)
    if run.last_checkpoint.exists() and not resume:
        raise FileExistsError(
            f"{run.root} already holds a fine-tuning run; pass --resume to continue it or choose another folder"
        )
    world, device = init_world(pick_device(cfg.device))
    if (
        not world.is_main
    ):  # the first process checks and records everything; the others then only open the base
        barrier(world)
        base = open_base(cfg.base, dataset, str(device), cfg.data, cfg, cfg.image_size)
        # Shaped only: DistributedDataParallel copies the first process's weights (whitening included) into it.
        return _fine_tune(
            run,
            cfg,
            base,
            build_network(cfg, base, fit_whitening=False),
            resume,
            checkpoint_minutes,
            world,
        )
    with run.lock():
        if run.exists():
            run.write_config(
                cfg, may_change=TRAINS_ON
            )  # a resumed run refuses other options before any work
        base = open_base(cfg.base, dataset, str(device), cfg.data, cfg, cfg.image_size)
        if base.split.n_in_domain * cfg.m_per_class < cfg.batch_size:
            raise ValueError(
                f"--batch-size {cfg.batch_size} needs {cfg.batch_size // cfg.m_per_class} in-domain classes of "
                f"{cfg.m_per_class} images, the data has {base.split.n_in_domain}: lower --batch-size or --m-per-class"
            )
        run.pin_data(base.dataset.name, base.dataset.checksum, base.dataset.location)
        check_split(run, base.split)
        torch.manual_seed(cfg.seed)
        resuming = resume and run.last_checkpoint.exists()
        net = build_network(cfg, base, fit_whitening=not resuming)
        run.write_config(cfg)
        barrier(world)
        result = _fine_tune(run, cfg, base, net, resume, checkpoint_minutes, world)
    return result


def _fine_tune(
    run: Run,
    cfg: TunedConfig,
    base: Base,
    net: RetrievalNet,
    resume: bool,
    checkpoint_minutes: float,
    world: World = World(),
) -> Run:
    labels = base.labels
    model = distribute(net, world)
    optimizer = OPTIMIZERS[cfg.optimizer](
        net.parameter_groups(cfg.lr, cfg.weight_decay), cfg.lr, cfg.weight_decay
    )
    generator = torch.Generator().manual_seed(process_seed(cfg.seed, world))  # augmentation's draws
    loss_fn, miner = build_objective(cfg, world)
    distance = (loss_fn.loss if isinstance(loss_fn, DistributedLossWrapper) else loss_fn).distance
    augment = RetrievalAugment() if cfg.augment else None
    val_idx = queryable(subset(base.split.val, cfg.val_images, cfg.seed, VAL_SEED_KEY), labels)

    def plan(epoch: int, g: torch.Generator) -> np.ndarray:
        return m_per_class_order(
            labels,
            base.split.train,
            cfg.m_per_class,
            cfg.batch_size,
            cfg.batches_per_epoch,
            cfg.seed,
            epoch,
        )

    step = _tuning_step(
        model, net, optimizer, (loss_fn, miner, distance), base, augment, generator, cfg, world
    )

    def validate() -> dict[str, float]:
        return from_main(world, lambda: validation_scores(net, base, val_idx, cfg))

    loop = Loop(
        run,
        net,
        optimizer,
        generator,
        plan,
        step,
        validate,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        monitor="val_mAP",
        mode="max",
        patience=cfg.patience,
        checkpoint_minutes=checkpoint_minutes,
        validate_start=True,
        world=world,
    )
    result = fit(loop, resume)
    if world.is_main:
        _record(run, cfg, base, net, result, len(val_idx), world)
    return run


def _tuning_step(
    model: torch.nn.Module,
    net: RetrievalNet,
    optimizer: torch.optim.Optimizer,
    objective: tuple[Any, Any, Any],
    base: Base,
    augment: RetrievalAugment | None,
    generator: torch.Generator,
    cfg: TunedConfig,
    world: World,
) -> Callable[[np.ndarray], dict[str, float]]:
    """One optimiser step on a batch of image indices (``objective``: loss, miner, distance); its figures
    are the loss, the miner's triplets, GeM's p and the batch's triplet diagnostics."""
    loss_fn, miner, distance = objective
    labels_t = torch.as_tensor(base.labels, device=base.device)

    def step(idx: np.ndarray) -> dict[str, float]:
        x = base.images.batch(idx)
        if augment is not None:
            x = augment(x, generator)
        y = labels_t[torch.as_tensor(idx, device=base.device)]
        with autocast(base.device, cfg.bf16):
            z = model(x)
        chosen = miner(z, y) if miner is not None else None
        loss = loss_fn(z, y, chosen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Under torchrun the loss is of the whole batch, scaled by the number of processes (see build_objective).
        figures = {"loss": loss.item() / world.size}
        if chosen is not None:
            figures["triplets"] = float(
                len(chosen[0])
            )  # how many the miner found in this (whole) batch
        if net.p is not None:
            figures["p"] = net.p
        # Of the whole batch on every process (as the loss), so the epoch's mean over processes is its own.
        triplet_figures = triplet_diagnostics(
            gather_rows(world, z), gather_rows(world, y), cfg.resolved_margin, distance
        )
        if (
            cfg.loss != "triplet"
        ):  # "active" and "loss_all" are the triplet hinge's: not what this loss trains on
            triplet_figures = {
                k: v for k, v in triplet_figures.items() if k not in ("active", "loss_all")
            }
        return figures | triplet_figures

    return step


def _record(
    run: Run,
    cfg: TunedConfig,
    base: Base,
    net: RetrievalNet,
    result: FitResult,
    n_val: int,
    world: World,
) -> None:
    """The first process's end of a fine-tuning: the curves, the best weights into ``net``, the run's
    ``tuned`` metrics and its progress."""
    from neuralcodes.plots.tuned_codes import (
        plot_tuning_curves,  # matplotlib: only once there is something to draw
    )

    plot_tuning_curves(result.history, run.figures / "tuning_curves.png", cfg.resolved_margin)
    best = load_checkpoint(run.best_checkpoint)["model"]
    net.load_state_dict(best)
    run.update_metrics(
        "tuned",
        {
            "start_val_mAP": result.history[0]["val_mAP"],
            "best_val_mAP": result.best,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history) - 1,
            "stopped_early": result.stopped_early,
            "p": net.p,
            "dim": net.dim,
            "n_val": n_val,
            "base": base.describe(),
            "processes": world.size,
            "machine": describe_machine(),
        },
    )
    run.write_progress("done", epochs_run=len(result.history) - 1, best_epoch=result.best_epoch)


def load_tuned(
    run: Run | str | Path,
    dataset: Dataset | None = None,
    device: str | None = None,
    data: str | None = None,
) -> tuple[RetrievalNet, TunedConfig, Base]:
    """The best weights of a fine-tuning run, with its base (data, split, images), in eval mode."""
    run = run if isinstance(run, Run) else Run(run)
    cfg = TunedConfig.from_dict(run.config("neuralcodes tuned train"), source=run.root)
    if not run.best_checkpoint.exists():
        raise FileNotFoundError(
            f"{run.root} has no fine-tuned weights yet ({run.best_checkpoint} is missing): "
            f"run `neuralcodes tuned train --out {run.root} ...` (with --resume to continue it)"
        )
    base = open_base(cfg.base, dataset, device or cfg.device, data or cfg.data, cfg, cfg.image_size)
    check_split(run, base.split)
    net = build_network(cfg, base, fit_whitening=False)
    net.load_state_dict(load_checkpoint(run.best_checkpoint)["model"])
    return net.eval(), cfg, base
