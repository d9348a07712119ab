"""A fine-tuning run stopped by SIGTERM mid-epoch resumes to the very weights of an uninterrupted run."""
import os
import signal

import pytest
import torch
from tuned_support import colour_dataset, tuned_config, untrained_base, weights

from neuralcodes.learning import loop
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.recipes.tuned_codes.train import train_tuned


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    data = colour_dataset()
    base = untrained_base(tmp_path / "base", data, n_ood=2)
    # Augmentation and learned whitening: the generator state and the fitted layer must survive the stop too.
    cfg = tuned_config(base, epochs=2, batches_per_epoch=3, augment=True, whitening="learned", val_images=40,
                       whiten_images=80, patience=5)  # fmt: skip
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
    assert state["epoch"] == 0 and state["in_epoch"]["epoch"] == 1 and state["in_epoch"]["next_batch"] == 2
    monkeypatch.setattr(loop.CheckpointTimer, "due", real_due)

    resumed = train_tuned(cfg, tmp_path / "resumed", resume=True, dataset=data)
    for name in ("last.pt", "best.pt"):
        a, b = weights(straight.checkpoints / name), weights(resumed.checkpoints / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [h["val_mAP"] for h in straight.history()] == [h["val_mAP"] for h in resumed.history()]
    assert resumed.metrics()["tuned"]["best_epoch"] == straight.metrics()["tuned"]["best_epoch"]
