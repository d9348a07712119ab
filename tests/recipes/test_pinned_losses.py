"""The lifecycle redesign changed no number: short seeded float32 runs give the losses recorded before it.

tests/recipes/data/pinned_losses.json was written by the same runs on the code before the redesign
(commit 0d16efb). The tolerance is relative 1e-5, not bit equality: CI may run on another CPU (AVX-512
or AMX kernels), whose float32 sums differ in the last bits; a changed step, order or seed moves these
figures by far more.
"""
import json
from pathlib import Path

import pytest
import torch

import neuralcodes.recipes.neural_codes.loop as loop
import neuralcodes.recipes.neural_codes.train as classify
from neuralcodes.recipes.neural_codes.config import ClassifyConfig

from test_neural_codes_train import synthetic_dataset  # noqa: E402

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_losses.json").read_text())["runs"]
RUNS = {"course": {}, "batch_norm_augment": dict(batch_norm=True, augment=True, weight_decay=1e-4)}
KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def config(name: str) -> ClassifyConfig:
    return ClassifyConfig(n_ood=2, batch_size=16, epochs=3, patience=5, lr=1e-3, eval_batch_size=64, device="cpu",
                          bf16=False, seed=3, **RUNS[name])  # fmt: skip


def figures(run) -> list[dict]:
    return [{k: h[k] for k in KEYS} for h in run.history()]


@pytest.mark.parametrize("name", RUNS)
def test_a_resumed_run_gives_the_losses_pinned_before_the_redesign(name, tmp_path, monkeypatch):
    torch.use_deterministic_algorithms(True)
    real, calls = loop.evaluate_classifier, {"n": 0}

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_classifier", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        classify.train_classifier(config(name), tmp_path / "r", dataset=synthetic_dataset())
    monkeypatch.setattr(loop, "evaluate_classifier", real)
    run = classify.train_classifier(config(name), tmp_path / "r", resume=True, dataset=synthetic_dataset())
    got = figures(run)
    assert len(got) == len(PINNED[name])
    for epoch, (row, pinned) in enumerate(zip(got, PINNED[name]), 1):
        for key in KEYS:
            assert row[key] == pytest.approx(pinned[key], rel=1e-5, abs=1e-7), f"epoch {epoch} {key}"
