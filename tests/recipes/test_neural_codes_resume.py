"""Interrupted training continues from the exact batch: mid-epoch checkpoints, SIGINT/SIGTERM, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import neuralcodes.learning.resume as resume
import neuralcodes.recipes.neural_codes.classification_step as loop
import neuralcodes.recipes.neural_codes.train as classify
from neuralcodes import io
from neuralcodes.cli import main
from neuralcodes.data.batches import DeviceImages
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run

from test_neural_codes_train import synthetic_dataset  # noqa: E402  (tests/recipes is on sys.path)


def config(**overrides) -> ClassifyConfig:
    base = dict(
        n_ood=2, batch_size=8, epochs=2, patience=5, eval_batch_size=64, device="cpu", augment=True
    )
    return ClassifyConfig(**{**base, **overrides})


def assert_same_weights(a, b) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def without_times(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history
    ]


def signal_after_training_batches(monkeypatch, n: int, signum: int = signal.SIGTERM) -> None:
    """Deliver ``signum`` to this process after the ``n``-th training batch (evaluation batches don't count)."""
    real, seen = loop.iterate_batches, {"n": 0}

    def iterate(*args, **kwargs):
        for batch in real(*args, **kwargs):
            if (
                len(args) >= 6 and args[5] is not None
            ):  # training passes its generator; evaluation does not
                seen["n"] += 1
                if (
                    seen["n"] == n
                ):  # arrives while batch n is formed: training stops once it is done
                    signal.raise_signal(signum)
            yield batch

    monkeypatch.setattr(loop, "iterate_batches", iterate)


def test_a_signal_mid_epoch_checkpoints_and_resume_is_bit_identical(tmp_path, monkeypatch):
    data = synthetic_dataset(per_class=20)
    straight = classify.train_classifier(config(), tmp_path / "straight", dataset=data)

    # The signal lands in the middle of the second epoch, with augmentation and dropout drawing
    # random numbers every batch.
    n = -(-len(classify.make_split(config(), data).train) // 8)
    signal_after_training_batches(monkeypatch, n + n // 2)
    with pytest.raises(
        TrainingInterrupted, match=rf"SIGTERM in epoch 2, after batch {n // 2}/{n}"
    ) as stopped:
        classify.train_classifier(config(), tmp_path / "resumed", dataset=data)
    assert stopped.value.exit_code == 143
    run = Run(tmp_path / "resumed")
    state = load_checkpoint(run.last_checkpoint)
    assert (
        state["in_epoch"]["epoch"] == 1
        and state["in_epoch"]["next_batch"] == n // 2
        and state["epoch"] == 0
    )
    monkeypatch.undo()

    classify.train_classifier(config(), run.root, resume=True, dataset=data)
    assert_same_weights(straight.last_checkpoint, run.last_checkpoint)
    assert_same_weights(straight.best_checkpoint, run.best_checkpoint)
    assert without_times(run.history()) == without_times(straight.history())
    assert load_checkpoint(run.last_checkpoint)["in_epoch"] is None


def test_periodic_checkpoints_inside_an_epoch(tmp_path, monkeypatch):
    saved = []
    real = resume.save_checkpoint  # where the shared loop writes last.pt

    def spy(path, *args, **kwargs):
        saved.append((path.name, kwargs.get("in_epoch")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(resume, "save_checkpoint", spy)
    data = synthetic_dataset(per_class=20)
    classify.train_classifier(
        config(epochs=1), tmp_path / "r", dataset=data, checkpoint_minutes=1e-9
    )
    n = -(-len(classify.make_split(config(), data).train) // 8)
    mid = [state["next_batch"] for name, state in saved if name == "last.pt" and state is not None]
    assert mid == list(range(1, n + 1))  # after every batch with a vanishing interval
    assert ("last.pt", None) in saved  # and the end-of-epoch one


def test_best_checkpoint_holds_weights_only(tmp_path):
    run = classify.train_classifier(config(epochs=1), tmp_path / "r", dataset=synthetic_dataset())
    assert load_checkpoint(run.best_checkpoint)["optimizer"] is None
    assert load_checkpoint(run.last_checkpoint)["optimizer"] is not None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neuralcodes", *args]


def test_sigterm_to_a_training_process_then_resume(tmp_path, synthetic_tiny_imagenet, capsys):
    """A real process gets SIGTERM mid-epoch: it checkpoints, says how to continue, and the resumed run
    ends bit-identical to an uninterrupted one."""
    data = synthetic_tiny_imagenet(wnids=[f"n0{i}" for i in range(6)], train_per_class=30)
    options = [
        "--data",
        str(data),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--n-ood",
        "2",
        "--patience",
        "5",
        "--device",
        "cpu",
        "--augment",
    ]
    assert main(["train", "--out", str(tmp_path / "straight"), *options]) == 0

    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        _cli("train", "--out", str(out), *options),
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            progress = json.loads((out / "progress.json").read_text())
        except (OSError, ValueError):
            progress = {}
        if progress.get("stage") == "training" and progress.get("batch", 0) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr
    assert (
        "stopped by SIGTERM" in stderr
        and "continue with: neuralcodes train" in stderr
        and "--resume" in stderr
    )
    state = load_checkpoint(Run(out).last_checkpoint)
    assert state["in_epoch"] is not None and state["in_epoch"]["next_batch"] >= 2

    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().err
    assert "not running" in status and "stage: training, epoch 1/2" in status

    assert main(["train", "--out", str(out), *options, "--resume"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().err
    assert (
        "stage: done" in status
        and "finished stages: training" in status
        and "--resume" not in status
    )
    assert_same_weights(tmp_path / "straight" / "checkpoints" / "last.pt", Run(out).last_checkpoint)


def tiny_classifier() -> torch.nn.Module:
    """The model of tests/recipes/data/legacy_classification.pt (as make_legacy_checkpoints.py builds it)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(16, 4),
    )


def test_a_mid_epoch_checkpoint_of_the_loop_before_it_was_shared_resumes_to_the_uninterrupted_weights(
    tmp_path,
):
    """Run folders trained before the loops became one (a long run resumes from such a file): the recipe's own
    loop wrote this last.pt after batch 2 of epoch 2, its sums as in_epoch keys of their own."""
    fixture = torch.load(
        Path(__file__).parent / "data" / "legacy_classification.pt", weights_only=False
    )
    assert set(fixture["last"]["in_epoch"]) == {
        "epoch",
        "order",
        "next_batch",
        "loss_sum",
        "correct",
        "seen",
        "seconds",
    }
    setup, cfg = fixture["setup"], ClassifyConfig.from_dict(fixture["setup"]["config"])

    def prepared() -> SimpleNamespace:
        torch.manual_seed(cfg.seed)  # as prepare() does: dropout draws from the global stream
        model = tiny_classifier()
        model.load_state_dict(setup["init"])
        return SimpleNamespace(
            model=model,
            images=DeviceImages(setup["images"]),
            labels=setup["labels"],
            device=torch.device("cpu"),
            split=SimpleNamespace(train=setup["train"], val=setup["val"], val_classes=()),
        )

    straight, resumed = Run(tmp_path / "straight"), Run(tmp_path / "resumed")
    loop.fit(straight, cfg, prepared(), resume=False, checkpoint_minutes=5.0)
    io.torch_save(resumed.last_checkpoint, fixture["last"])
    io.torch_save(resumed.best_checkpoint, fixture["best"])
    loop.fit(resumed, cfg, prepared(), resume=True, checkpoint_minutes=5.0)

    # Equal on the machine that wrote the fixture; the tolerance only admits another CPU's float rounding
    # (a batch too many or too few, or another random stream, moves these weights by about 1e-2).
    ours, theirs, old_code = (
        load_checkpoint(straight.last_checkpoint)["model"],
        load_checkpoint(resumed.last_checkpoint)["model"],
        fixture["straight"]["model"],
    )
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            ours[key], old_code[key], rtol=1e-4, atol=1e-5
        )  # today's loop trains as the old one
    # The epoch figures add the old checkpoint's sums (its first two batches) to the resumed batches.
    for a, b, c in zip(
        straight.history(), resumed.history(), fixture["straight"]["history"], strict=True
    ):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5) and a[key] == pytest.approx(
                c[key], rel=1e-5
            ), key
    assert load_checkpoint(resumed.last_checkpoint)["in_epoch"] is None
