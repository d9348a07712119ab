"""The 64x64 ResNet-18 / tiny classifier of the in-domain classes: its layers, training and loading."""

import numpy as np
import pytest
import torch
from tuned_support import colour_dataset

from neuralcodes.models.resnet import MapClassifier
from neuralcodes.recipes.tuned_codes.base import open_base
from neuralcodes.recipes.tuned_codes.classifier import (
    load_map_classifier,
    train_map_classifier,
)
from neuralcodes.recipes.tuned_codes.config import ClassifierConfig


def test_resnet18_keeps_an_8x8_map_of_a_64x64_image():
    torch.manual_seed(0)
    model = MapClassifier(7, "resnet18").eval()
    out = model.forward_features(torch.rand(2, 3, 64, 64))
    assert (
        out["conv"].shape == (2, 512, 8, 8)
        and out["pool"].shape == (2, 512)
        and out["logits"].shape == (2, 7)
    )
    torch.testing.assert_close(out["pool"], out["conv"].mean(dim=(2, 3)))
    torch.testing.assert_close(out["logits"], model.fc(out["pool"]))
    assert model.features.stem[0].stride == (1, 1)  # the 64x64 stem: no stride, no max-pool


def test_a_classifier_trains_with_early_stopping_and_loads_back(tmp_path):
    data = colour_dataset()
    cfg = ClassifierConfig(
        arch="tiny",
        n_ood=2,
        epochs=3,
        batch_size=16,
        patience=5,
        lr=3e-3,
        device="cpu",
        eval_batch_size=64,
    )
    run = train_map_classifier(cfg, tmp_path / "cls", dataset=data)
    history = run.history()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    training = run.metrics()["training"]
    assert training["best_val_loss"] == min(h["val_loss"] for h in history)
    model, loaded = load_map_classifier(run)
    assert loaded == cfg and model.arch == "tiny"
    base = open_base(str(run.root), data)
    assert base.name == "tiny" and base.code_layers == ("pool",) and not base.saw_held_out
    held_out = np.asarray(data.train.labels)[base.split.ood]
    assert set(held_out) == {6, 7} and (base.labels[base.split.ood] == -1).all()
    with pytest.raises(FileExistsError, match="--resume"):
        train_map_classifier(cfg, tmp_path / "cls", dataset=data)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="--arch"):
        ClassifierConfig(arch="vgg").validate()
