"""Fine-tuning for retrieval on the embedded sample: it improves validation mAP and never reads the held-out classes."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from tuned_support import tuned_config, untrained_base, weights

from neuralcodes.data.imageset import ImageSet
from neuralcodes.recipes.tuned_codes.train import load_tuned, train_tuned


@pytest.fixture(scope="module")
def sample_base(sample_dataset, tmp_path_factory):
    return untrained_base(tmp_path_factory.mktemp("tuned") / "base", sample_dataset)


def test_a_short_fine_tuning_improves_in_domain_validation_map(
    sample_dataset, sample_base, tmp_path
):
    # From random weights, every triplet of the batch (not only semi-hard ones) is what moves the codes fastest.
    cfg = tuned_config(
        sample_base,
        batch_size=40,
        batches_per_epoch=8,
        epochs=2,
        val_images=200,
        patience=5,
        mining="all",
    )
    run = train_tuned(cfg, tmp_path / "tuned", dataset=sample_dataset)
    result = run.metrics()["tuned"]
    history = run.history()
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[0]["val_mAP"] == result["start_val_mAP"]
    assert result["best_epoch"] >= 1
    assert result["best_val_mAP"] > result["start_val_mAP"] + 0.01, result
    assert result["p"] != 3.0  # the gradient reached GeM's power
    assert run.config()["kind"] == "tuned_codes"
    net, _, base = load_tuned(run, sample_dataset)
    assert net.p == pytest.approx(result["p"])
    assert base.split.sizes["ood"] == 1000


def test_the_history_holds_the_batches_triplet_figures(sample_dataset, sample_base, tmp_path):
    # One batch per epoch: the epoch's figures are that batch's. The recipe's loss is the mean over the
    # violating triplets (the "active" reducer, chosen in train.py), so it must equal the mean over all
    # triplets divided by the fraction active, both measured with the loss's own distance.
    cfg = tuned_config(
        sample_base, batch_size=24, batches_per_epoch=1, epochs=2, val_images=40, mining="all"
    )
    run = train_tuned(cfg, tmp_path / "tuned", dataset=sample_dataset)
    history = run.history()
    for row in history[1:]:
        for key in (
            "train_active",
            "train_loss_all",
            "train_d_ap",
            "train_d_an",
            "train_gap",
            "train_spread",
        ):
            assert key in row and np.isfinite(row[key]), key
        assert (
            0 < row["train_active"] < 1
        )  # so "active" and "mean" differ here and the next check can tell
        assert row["train_loss"] == pytest.approx(
            row["train_loss_all"] / row["train_active"], rel=1e-5
        )
        assert row["train_gap"] == pytest.approx(row["train_d_an"] - row["train_d_ap"])
        assert row["train_spread"] > 0
    assert "train_active" not in history[0]  # epoch 0 scores the starting weights: no batch yet
    assert (run.figures / "tuning_curves.png").stat().st_size > 0
    assert "train_active" in run.root.joinpath("history.csv").read_text().splitlines()[0]


def garbled_held_out(dataset, seed: int = 1):
    """The same data with every held-out image's pixels replaced by noise and its label by a random
    held-out class: the split (which images are held out) is unchanged, the checksum kept."""
    data = dataset.train
    labels = np.asarray(data.labels).copy()
    held_out = np.unique(labels[-1000:])  # the sample's last 10 classes, 100 images each
    ood = np.flatnonzero(np.isin(labels, held_out))
    rng = np.random.default_rng(seed)
    images = np.array(data.images)
    images[ood] = rng.integers(0, 256, images[ood].shape, dtype=np.uint8)
    labels[ood] = rng.choice(held_out, size=len(ood))
    garbled = ImageSet(
        images, labels, list(data.class_ids), list(data.class_names), list(data.files)
    )
    return replace(dataset, train=garbled)


def test_held_out_classes_are_never_read_before_evaluation(sample_dataset, sample_base, tmp_path):
    garbled = garbled_held_out(sample_dataset)
    assert not np.array_equal(garbled.train.images[-1000:], sample_dataset.train.images[-1000:])
    cfg = tuned_config(sample_base, whitening="learned", augment=True)
    a = train_tuned(cfg, tmp_path / "real", dataset=sample_dataset)
    b = train_tuned(cfg, tmp_path / "garbage", dataset=garbled)
    for name in ("best.pt", "last.pt"):
        wa, wb = weights(a.checkpoints / name), weights(b.checkpoints / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}: {key} differs"

    def scores(run):  # the history without its timings
        return [
            {k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
            for h in run.history()
        ]

    assert scores(a) == scores(b)

    # The comparison is not vacuous: the same garbling of the in-domain images changes the weights.
    data = sample_dataset.train
    touched = np.array(data.images)
    touched[:2000] = 255 - touched[:2000]  # the 20 in-domain classes
    changed = replace(
        sample_dataset,
        train=ImageSet(touched, data.labels, data.class_ids, data.class_names, data.files),
    )
    c = train_tuned(cfg, tmp_path / "control", dataset=changed)
    wc = weights(c.checkpoints / "last.pt")
    assert any(not torch.equal(wa[key], wc[key]) for key in wa)


def test_a_resumed_run_refuses_other_options(sample_dataset, sample_base, tmp_path):
    cfg = tuned_config(sample_base, val_images=40, batches_per_epoch=1)
    train_tuned(cfg, tmp_path / "run", dataset=sample_dataset)
    with pytest.raises(FileExistsError, match="--resume"):
        train_tuned(cfg, tmp_path / "run", dataset=sample_dataset)
    with pytest.raises(ValueError, match="differs in: lr"):
        train_tuned(replace(cfg, lr=0.5), tmp_path / "run", resume=True, dataset=sample_dataset)
