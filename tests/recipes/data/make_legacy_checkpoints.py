"""Writes the legacy checkpoints the resume tests read: run once, with the code of commit 2ff3c1d.

That code had its own loop in recipes/neural_codes/loop.py (in-epoch sums as top-level keys:
loss_sum, correct, seen) and an epoch-level loop in recipes/deep_ranking/train.py (``epoch`` = epochs
completed, no early stopping, no position inside an epoch). Real run folders hold such files, so the
shared loop must keep resuming them; this script is kept to say how the fixtures were made. It no
longer runs on today's code (that is the point of it).

    .venv/bin/python tests/recipes/data/make_legacy_checkpoints.py
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).parent


def tiny_classifier() -> torch.nn.Module:
    """The model of the classification fixture (the test builds the same one)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(16, 4),
    )


def classification() -> None:
    import neuralcodes.recipes.neural_codes.loop as loop
    from neuralcodes.data.batches import DeviceImages
    from neuralcodes.learning.checkpoint import load_checkpoint
    from neuralcodes.learning.interrupt import TrainingInterrupted
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig
    from neuralcodes.runs import Run

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.integers(40, 215, (4, 3))
    images = np.clip(
        rng.normal(centres[labels][:, None, None, :], 40, (40, 8, 8, 3)), 0, 255
    ).astype(np.uint8)
    train, val = (
        np.concatenate([np.arange(c * 10, c * 10 + 8) for c in range(4)]),
        np.arange(8, 40, 10),
    )
    cfg = ClassifyConfig(
        batch_size=8,
        epochs=3,
        patience=5,
        lr=1e-2,
        eval_batch_size=64,
        device="cpu",
        augment=True,
        bf16=False,
        seed=0,
    )
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in tiny_classifier().state_dict().items()}

    def prepared() -> SimpleNamespace:
        torch.manual_seed(cfg.seed)  # as prepare() does: dropout draws from the global stream
        model = tiny_classifier()
        model.load_state_dict(init)
        return SimpleNamespace(
            model=model,
            images=DeviceImages(images),
            labels=labels,
            device=torch.device("cpu"),
            split=SimpleNamespace(train=train, val=val),
        )

    with tempfile.TemporaryDirectory() as tmp:
        straight = Run(Path(tmp) / "straight")
        loop.fit(straight, cfg, prepared(), resume=False, checkpoint_minutes=5.0)
        stopped = Run(Path(tmp) / "stopped")
        real, seen = loop.iterate_batches, {"n": 0}

        def iterate(*args, **kwargs):  # SIGTERM while the 2nd batch of epoch 2 is formed
            for batch in real(*args, **kwargs):
                if len(args) >= 6 and args[5] is not None:
                    seen["n"] += 1
                    if seen["n"] == 4 + 2:
                        signal.raise_signal(signal.SIGTERM)
                yield batch

        loop.iterate_batches = iterate
        try:
            loop.fit(stopped, cfg, prepared(), resume=False, checkpoint_minutes=5.0)
            raise AssertionError("the training was not interrupted")
        except TrainingInterrupted:
            pass
        finally:
            loop.iterate_batches = real
        last = load_checkpoint(stopped.last_checkpoint)
        assert last["in_epoch"]["next_batch"] == 2 and last["epoch"] == 0, last["in_epoch"]
        fixture = {
            "setup": {
                "images": images,
                "labels": labels,
                "train": train,
                "val": val,
                "config": cfg.to_dict(),
                "init": init,
            },
            "last": last,
            "best": load_checkpoint(stopped.best_checkpoint),
            "straight": {
                "model": load_checkpoint(straight.last_checkpoint)["model"],
                "history": straight.history(),
            },
        }
    torch.save(fixture, HERE / "legacy_classification.pt")


def ranking_config():
    from neuralcodes.recipes.deep_ranking.config import RankConfig

    return RankConfig(
        backbone="tiny",
        pretrained=False,
        freeze_backbone=True,
        multiscale=False,
        embedding_dim=16,
        batch_size=64,
        epochs=2,
        triplets_per_epoch=256,
        eval_triplets=300,
        optimizer="sgd",
        lr=0.05,
        seed=3,
        bf16=False,
        device="cpu",
    )


def ranking() -> None:
    import neuralcodes.recipes.deep_ranking.train as train
    from neuralcodes.data.sources import load_dataset
    from neuralcodes.learning.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset("sample", cache_dir=Path(tmp) / "cache")
        full = train.train_ranking(ranking_config(), Path(tmp) / "full", dataset=data)
        real, calls = train.train_epoch, []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        train.train_epoch = interrupted
        try:
            train.train_ranking(ranking_config(), Path(tmp) / "cut", dataset=data)
            raise AssertionError("the training was not interrupted")
        except KeyboardInterrupt:
            pass
        finally:
            train.train_epoch = real
        last = load_checkpoint(Path(tmp) / "cut" / "checkpoints" / "last.pt")
        assert last["epoch"] == 1 and "in_epoch" not in last
        fixture = {
            "config": ranking_config().to_dict(),
            "last": last,
            "straight": {
                "model": load_checkpoint(full.last_checkpoint)["model"],
                "history": full.history(),
            },
        }
    torch.save(fixture, HERE / "legacy_ranking.pt")


if __name__ == "__main__":
    classification()
    ranking()
