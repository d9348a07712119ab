"""A fine-tuning run stopped by SIGTERM mid-epoch resumes to the very weights of an uninterrupted run."""

import os
import signal
from dataclasses import replace

import pytest
import torch
from tuned_support import colour_dataset, tuned_config, untrained_base, weights

from neuralcodes.cli import main
from neuralcodes.data.sources import load_dataset
from neuralcodes.learning import loop
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.recipes.tuned_codes.train import train_tuned
from neuralcodes.runs import Run


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    data = colour_dataset()
    base = untrained_base(tmp_path / "base", data, n_ood=2)
    # Augmentation and learned whitening: the generator state and the fitted layer must survive the stop too.
    cfg = tuned_config(
        base,
        epochs=2,
        batches_per_epoch=3,
        augment=True,
        whitening="learned",
        val_images=40,
        whiten_images=80,
        patience=5,
    )
    straight = train_tuned(cfg, tmp_path / "straight", dataset=data)

    real_due, calls = loop.CheckpointTimer.due, {"n": 0}

    def due(self):
        calls["n"] += 1
        if calls["n"] == 4:  # during the 1st batch of epoch 2: handled after the 2nd
            os.kill(os.getpid(), signal.SIGTERM)
        return real_due(self)

    monkeypatch.setattr(loop.CheckpointTimer, "due", due)
    with pytest.raises(TrainingInterrupted, match="in epoch 2, after batch 2/3") as stopped:
        train_tuned(cfg, tmp_path / "resumed", dataset=data)
    assert stopped.value.exit_code == 143
    state = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert (
        state["epoch"] == 0
        and state["in_epoch"]["epoch"] == 1
        and state["in_epoch"]["next_batch"] == 2
    )
    monkeypatch.setattr(loop.CheckpointTimer, "due", real_due)

    resumed = train_tuned(cfg, tmp_path / "resumed", resume=True, dataset=data)
    for name in ("last.pt", "best.pt"):
        a, b = weights(straight.checkpoints / name), weights(resumed.checkpoints / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [h["val_mAP"] for h in straight.history()] == [h["val_mAP"] for h in resumed.history()]
    assert resumed.metrics()["tuned"]["best_epoch"] == straight.metrics()["tuned"]["best_epoch"]


def test_a_finished_run_resumed_with_more_epochs_trains_on_as_if_it_had_been_asked_for_them(
    tmp_path,
):
    data = colour_dataset()
    base = untrained_base(tmp_path / "base", data, n_ood=2)
    cfg = tuned_config(base, epochs=3, batches_per_epoch=2, augment=True, val_images=40, patience=5)
    straight = train_tuned(cfg, tmp_path / "straight", dataset=data)
    train_tuned(replace(cfg, epochs=1), tmp_path / "longer", dataset=data)
    with pytest.raises(
        ValueError, match=r"differs in: lr\)"
    ):  # only the number of epochs may change
        train_tuned(replace(cfg, lr=cfg.lr * 2), tmp_path / "longer", resume=True, dataset=data)
    longer = train_tuned(cfg, tmp_path / "longer", resume=True, dataset=data)
    assert [h["epoch"] for h in longer.history()] == [0, 1, 2, 3]
    for name in ("last.pt", "best.pt"):
        a, b = weights(straight.checkpoints / name), weights(longer.checkpoints / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    stored = longer.config()
    assert stored["epochs"] == 3 and stored["changed_on_resume"] == [
        {"option": "epochs", "from": 1, "to": 3}
    ]


def test_resume_from_the_command_line_keeps_the_runs_epochs_unless_asked(
    tmp_path, synthetic_tiny_imagenet
):
    archive = str(synthetic_tiny_imagenet(wnids=[f"n0{i}" for i in range(8)], train_per_class=16))
    base = untrained_base(tmp_path / "base", load_dataset(archive), n_ood=2, data=archive)
    options = [
        "tuned",
        "train",
        "--base",
        str(base),
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "16",
        "--batches-per-epoch",
        "1",
        "--val-images",
        "40",
        "--device",
        "cpu",
    ]
    assert main([*options, "--epochs", "1"]) == 0
    assert main([*options, "--resume"]) == 0  # not the default of 10 epochs: the run's own 1
    assert (
        Run(tmp_path / "run").config()["epochs"] == 1 and len(Run(tmp_path / "run").history()) == 2
    )
    assert main([*options, "--resume", "--epochs", "2"]) == 0
    assert (
        Run(tmp_path / "run").config()["epochs"] == 2 and len(Run(tmp_path / "run").history()) == 3
    )
