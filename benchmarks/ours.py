"""This project's side of the benchmark: the bare training step, the real loop, a whole epoch, code extraction.

Each function builds its model and data itself, so the harness can run it in a fresh process.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from benchmarks.timing import Clock
from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.device import autocast
from neuralcodes.learning.optimizers import build_optimizer
from neuralcodes.models.convnet import NeuralCodesConvNet

NUM_CLASSES = 190


def _settings(bf16: bool, channels_last: bool = True) -> dict[str, Any]:
    return {
        "precision": "bf16 autocast" if bf16 else "fp32",
        "channels_last": channels_last,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _model(num_classes: int, channels_last: bool, seed: int) -> NeuralCodesConvNet:
    torch.manual_seed(seed)
    model = NeuralCodesConvNet(num_classes)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def train_epoch(model, optimizer, images, labels, state, cfg, generator) -> None:
    """One epoch exactly as the shared loop runs it: the recipe's classification step through ``run_epoch``."""
    from neuralcodes.learning.loop import run_epoch
    from neuralcodes.recipes.neural_codes.classification_step import (
        classification_figures,
        classification_step,
    )

    model.train()
    step = classification_step(model, optimizer, images, labels, cfg, generator)
    run_epoch(state, step, cfg.batch_size, "epoch", summarise=classification_figures)


def recipe_loop(*names: str) -> list[Any]:
    """Names from the recipe's training loop, wherever it lives (``classification_step.py``; ``loop.py`` from
    the multi-process work until its rename, ``train.py`` before)."""
    try:
        from neuralcodes.recipes.neural_codes import classification_step as module
    except ImportError:
        try:
            from neuralcodes.recipes.neural_codes import loop as module
        except ImportError:
            from neuralcodes.recipes.neural_codes import train as module
    return [getattr(module, name) for name in names]


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def train_step(
    steps: int,
    batch: int,
    bf16: bool = True,
    channels_last: bool = True,
    warmup: int = 2,
    seed: int = 0,
    fused_adam: bool = False,
) -> dict[str, Any]:
    """images/s of the bare step on one fixed batch: forward, cross-entropy, backward, Adam amsgrad.

    ``fused_adam``: PyTorch's fused Adam kernel instead of the recipe's optimiser (for comparison only).
    """
    model = _model(NUM_CLASSES, channels_last, seed)
    if fused_adam:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True, fused=True)
    else:
        optimizer = build_optimizer("adam_amsgrad", model.parameters(), 1e-4)
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=torch.Generator().manual_seed(seed))
    device = torch.device("cpu")

    def step() -> torch.Tensor:
        with autocast(device, bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    with Clock() as clock:
        for _ in range(steps):
            loss = step()
    return {
        **clock.figures(steps * batch),
        "steps": steps,
        "batch": batch,
        "final_loss": loss.item(),
        "fused_adam": fused_adam,
        **_settings(bf16, channels_last),
    }


def train_loop(
    steps: int,
    batch: int,
    bf16: bool = True,
    augment: bool = False,
    warmup: int = 2,
    seed: int = 0,
    live_progress: bool = False,
) -> dict[str, Any]:
    """images/s of the real loop (the classification step through ``run_epoch``) over ``steps * batch`` in-memory uint8 images.

    Everything the loop does per batch is in: index + uint8 -> float, augmentation when asked, the
    step, loss and accuracy bookkeeping. ``warmup`` batches run first in a separate call.
    ``live_progress``: the progress bar draws as in a terminal (rich's refresh thread runs), as a user's
    ``neuralcodes run`` does; otherwise it is off (NEURALCODES_NO_PROGRESS=1), as in tests and logs.
    """
    with _progress_drawn(live_progress):
        return _train_loop(steps, batch, bf16, augment, warmup, seed, live_progress)


@contextlib.contextmanager
def _progress_drawn(live: bool) -> Iterator[None]:
    """With ``live``, progress bars render to a terminal that draws nowhere (rich's refresh thread runs)."""
    if not live:
        yield
        return
    import neuralcodes.progress

    saved_env, saved_console = (
        os.environ.pop("NEURALCODES_NO_PROGRESS", None),
        neuralcodes.progress.console,
    )
    with open(os.devnull, "w") as devnull:
        neuralcodes.progress.console = Console(file=devnull, force_terminal=True, width=120)
        try:
            yield
        finally:
            neuralcodes.progress.console = saved_console
            if saved_env is not None:
                os.environ["NEURALCODES_NO_PROGRESS"] = saved_env


def _train_loop(
    steps: int, batch: int, bf16: bool, augment: bool, warmup: int, seed: int, live_progress: bool
) -> dict[str, Any]:
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig

    from neuralcodes.learning.loop import InEpoch as EpochState

    train_one_epoch = train_epoch
    n = steps * batch
    images = DeviceImages(random_images(n + warmup * batch, seed), "cpu")
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, len(images))
    model = _model(NUM_CLASSES, True, seed)
    optimizer = build_optimizer("adam_amsgrad", model.parameters(), 1e-4)
    cfg = ClassifyConfig(batch_size=batch, epochs=1, bf16=bf16, augment=augment, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    if warmup:
        train_one_epoch(
            model,
            optimizer,
            images,
            labels,
            EpochState(0, np.arange(n, len(images))),
            cfg,
            generator,
        )
    state = EpochState(0, np.arange(n))
    with Clock() as clock:
        train_one_epoch(model, optimizer, images, labels, state, cfg, generator)
    return {
        **clock.figures(n),
        "steps": steps,
        "batch": batch,
        "augment": augment,
        "live_progress": live_progress,
        "final_loss": state.sums["loss_sum"] / state.seen,
        **_settings(bf16),
    }


def synthetic_dataset(n_classes: int, per_class: int, seed: int = 0) -> Dataset:
    """Class-major random uint8 images, as tests/recipes/test_neural_codes_train.py builds its data."""
    images = random_images(n_classes * per_class, seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    ids = [f"c{i}" for i in range(n_classes)]
    return Dataset("synthetic", ImageSet(images, labels, ids, ids), None, "synthetic")


def whole_epoch(
    images: int,
    batch: int,
    bf16: bool = True,
    epochs: int = 1,
    seed: int = 0,
    profile_to: str | None = None,
) -> dict[str, Any]:
    """``train_classifier`` for ``epochs`` on a synthetic dataset: the rate the history reports (training loop
    only) beside training images / wall time (validation, checkpoints, history and figure writes included).

    200 classes, the last 10 held out, as on Tiny ImageNet; ``images`` counts all of them (80 % of the
    in-domain ones train). ``profile_to``: write a cProfile of the whole call there (for the breakdown).
    """
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig
    from neuralcodes.recipes.neural_codes.train import train_classifier
    from neuralcodes.runs import Run

    per_class = max(images // 200, 2)
    data = synthetic_dataset(200, per_class, seed)
    cfg = ClassifyConfig(
        batch_size=batch,
        epochs=epochs,
        bf16=bf16,
        device="cpu",
        n_ood=10,
        patience=epochs,
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        profiler = None
        if profile_to:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        with Clock() as clock:
            train_classifier(cfg, Path(tmp) / "run", dataset=data)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)
        run = Run(Path(tmp) / "run")
        history = run.history()
        checkpoint_mib = (
            sum(p.stat().st_size for p in run.last_checkpoint.parent.glob("*.pt")) / 2**20
        )
    train_images = round(history[0]["images_per_s"] * history[0]["seconds"])
    loop_seconds = sum(h["seconds"] for h in history)
    return {
        **clock.figures(train_images * epochs),
        "loop_images_per_s": train_images * epochs / loop_seconds,
        "loop_seconds": loop_seconds,
        "train_images": train_images,
        "epochs": epochs,
        "batch": batch,
        "checkpoint_mib": checkpoint_mib,
        **_settings(bf16),
    }


def infer(
    batches: int, batch: int, bf16: bool = True, warmup: int = 1, seed: int = 0
) -> dict[str, Any]:
    """images/s of ``extract_codes`` (the study's path): L2-normalised L5/L6/L7 from one pass per batch."""
    from neuralcodes.retrieval.codes import extract_codes

    images = DeviceImages(random_images(batches * batch, seed), "cpu")
    model = _model(NUM_CLASSES, True, seed)
    if warmup:
        extract_codes(
            model,
            images,
            np.arange(min(warmup * batch, len(images))),
            ("L5", "L6", "L7"),
            batch,
            autocast=bf16,
        )
    with Clock() as clock:
        codes = extract_codes(
            model, images, np.arange(len(images)), ("L5", "L6", "L7"), batch, autocast=bf16
        )
    return {
        **clock.figures(len(images)),
        "batches": batches,
        "batch": batch,
        "dims": [int(c.shape[1]) for c in codes.values()],
        **_settings(bf16),
    }
