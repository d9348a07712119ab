import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import neuralcodes.recipes.deep_ranking.train as ranking
from neuralcodes import io
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.learning.samplers import TripletSampler
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.inputs import make_inputs
from neuralcodes.recipes.deep_ranking.ranking_step import (
    build_network,
    build_objective,
    train_epoch,
)
from neuralcodes.recipes.deep_ranking.train import load_network, train_ranking
from neuralcodes.runs import Run


def _config(**kw):
    base = dict(
        backbone="tiny",
        pretrained=False,
        freeze_backbone=True,
        multiscale=True,
        embedding_dim=16,
        batch_size=64,
        epochs=3,
        triplets_per_epoch=1024,
        eval_triplets=1000,
        lr=0.003,
        seed=3,
        bf16=False,
        device="cpu",
    )
    return RankConfig(**{**base, **kw})


def test_training_raises_test_similarity_precision(sample_dataset, tmp_path):
    run = train_ranking(_config(), tmp_path / "run", dataset=sample_dataset)
    before = run.metrics()["ranking_untrained"]["test_similarity_precision"]
    history = run.history()
    assert len(history) == 3
    assert history[-1]["test_similarity_precision"] > before + 0.03
    assert history[-1]["loss"] < history[0]["loss"]
    # Artefacts: config, the pinned data, triplets per epoch, per-iteration losses, plot.
    config = json.loads(run.config_path.read_text())
    assert config["kind"] == "deep_ranking" and config["backbone"] == "tiny"
    assert json.loads(run.data_path.read_text())["checksum"] == sample_dataset.checksum
    for epoch in range(3):
        t = np.load(run.root / "triplets" / f"epoch_{epoch:03d}.npy")
        labels = sample_dataset.train.labels
        assert t.shape == (1024, 3) and (labels[t[:, 0]] == labels[t[:, 1]]).all()
    lines = (run.root / "loss_iterations.csv").read_text().splitlines()
    assert lines[0] == "epoch,iteration,loss" and len(lines) == 1 + 3 * 16
    assert [int(line.split(",")[1]) for line in lines[1:]] == list(range(1, 3 * 16 + 1))
    assert (run.figures / "ranking_loss.png").stat().st_size > 0


def test_resume_gives_the_uninterrupted_result(sample_dataset, tmp_path, monkeypatch):
    config = _config(epochs=2, triplets_per_epoch=256, eval_triplets=300, multiscale=False)
    full = train_ranking(config, tmp_path / "full", dataset=sample_dataset)

    real_get = ranking.TripletStore.get

    def interrupted(store, epoch):  # a hard stop as the 2nd epoch begins
        if epoch == 1:
            raise KeyboardInterrupt
        return real_get(store, epoch)

    monkeypatch.setattr(ranking.TripletStore, "get", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_ranking(config, tmp_path / "cut", dataset=sample_dataset)
    monkeypatch.setattr(ranking.TripletStore, "get", real_get)
    with pytest.raises(FileExistsError, match="--resume"):
        train_ranking(config, tmp_path / "cut", dataset=sample_dataset)
    resumed = train_ranking(config, tmp_path / "cut", dataset=sample_dataset, resume=True)

    _, a, pa = load_network(full)
    _, b, pb = load_network(resumed)
    assert pa["epoch"] == pb["epoch"] == 2
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert [h["loss"] for h in full.history()] == pytest.approx(
        [h["loss"] for h in resumed.history()], abs=1e-6
    )
    # A different configuration is refused on resume.
    with pytest.raises(ValueError, match="different configuration"):
        train_ranking(
            _config(epochs=2, triplets_per_epoch=256, eval_triplets=300, multiscale=False, lr=0.1),
            tmp_path / "cut",
            dataset=sample_dataset,
            resume=True,
        )


def _same_weights(a, b, **tolerance) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(y, x, **tolerance, msg=name)


def test_sigterm_mid_epoch_checkpoints_and_resume_continues_from_the_batch(
    sample_dataset, tmp_path, monkeypatch
):
    config = _config(
        epochs=2, triplets_per_epoch=256, eval_triplets=300, multiscale=False
    )  # 4 batches an epoch
    full = train_ranking(config, tmp_path / "full", dataset=sample_dataset)

    real_step, calls = ranking.ranking_step, {"n": 0}

    def signalled_step(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def step_then_signal(t):
            calls["n"] += 1
            if calls["n"] == 4 + 2:  # during batch 2 of epoch 2: handled once it is done
                signal.raise_signal(signal.SIGTERM)
            return step(t)

        return step_then_signal

    monkeypatch.setattr(ranking, "ranking_step", signalled_step)
    with pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2, after batch 2/4") as stopped:
        train_ranking(config, tmp_path / "cut", dataset=sample_dataset)
    assert stopped.value.exit_code == 143
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (
        state["epoch"] == 0
        and state["in_epoch"]["epoch"] == 1
        and state["in_epoch"]["next_batch"] == 2
    )
    assert len(state["iterations"]) == 4 + 2
    monkeypatch.undo()

    resumed = train_ranking(config, tmp_path / "cut", dataset=sample_dataset, resume=True)
    _, a, pa = load_network(full)
    _, b, pb = load_network(resumed)
    assert pa["epoch"] == pb["epoch"] == 2
    _same_weights(a, b, rtol=0, atol=0)
    assert resumed.history() == [
        {**h, "seconds": r["seconds"], "triplets_per_s": r["triplets_per_s"]}
        for h, r in zip(full.history(), resumed.history(), strict=True)
    ]
    assert (resumed.root / "loss_iterations.csv").read_text() == (
        full.root / "loss_iterations.csv"
    ).read_text()


def test_an_epoch_checkpoint_of_the_loop_before_it_was_shared_resumes(sample_dataset, tmp_path):
    """Run folders trained before deep ranking used the shared loop: this last.pt (written by that code after
    epoch 1 of 2) counts epochs done in ``epoch`` and has neither early stopping nor a position in an epoch."""
    fixture = torch.load(Path(__file__).parent / "data" / "legacy_ranking.pt", weights_only=False)
    assert fixture["last"]["epoch"] == 1 and "in_epoch" not in fixture["last"]
    config = RankConfig.from_dict(fixture["config"])
    full = train_ranking(config, tmp_path / "full", dataset=sample_dataset)
    old = Run(tmp_path / "old")
    io.torch_save(old.last_checkpoint, fixture["last"])

    resumed = train_ranking(config, old.root, dataset=sample_dataset, resume=True)
    _, a, pa = load_network(full)
    _, b, pb = load_network(resumed)
    assert pa["epoch"] == pb["epoch"] == 2 and [h["epoch"] for h in resumed.history()] == [1, 2]
    # Equal on the machine that wrote the fixture; the tolerance only admits another CPU's float rounding.
    _same_weights(a, b, rtol=1e-4, atol=1e-5)
    reference = build_network(config)
    reference.load_state_dict(fixture["straight"]["model"])
    _same_weights(a, reference, rtol=1e-4, atol=1e-5)  # today's loop trains as the old one did
    for h, r, o in zip(
        full.history(), resumed.history(), fixture["straight"]["history"], strict=True
    ):
        for key in ("loss", "train_similarity_precision", "test_similarity_precision"):
            assert r[key] == pytest.approx(h[key], rel=1e-5) and h[key] == pytest.approx(
                o[key], rel=1e-5
            ), key
    lines = (old.root / "loss_iterations.csv").read_text().splitlines()
    assert [int(line.split(",")[1]) for line in lines[1:]] == list(range(1, 2 * 4 + 1))


def test_frozen_backbone_features_are_cached_and_reused(sample_dataset, tmp_path, monkeypatch):
    config = _config(epochs=1, triplets_per_epoch=256, eval_triplets=300)
    run = train_ranking(config, tmp_path / "frozen", dataset=sample_dataset)
    feats = np.load(run.root / "features" / "train.npy")
    assert feats.shape == (len(sample_dataset.train), 32)
    assert not (run.root / "features" / "train_parts").exists()
    _, net, _ = load_network(run)
    x = (
        torch.from_numpy(np.array(sample_dataset.train.images[:4])).permute(0, 3, 1, 2).float()
        / 255
    )
    with torch.no_grad():
        expected = net.backbone(x).numpy()
    np.testing.assert_allclose(feats[:4], expected, rtol=1e-2, atol=1e-2)  # stored as float16
    # The backbone of a frozen run does not change in training.
    torch.manual_seed(config.seed)
    untouched = build_network(config)
    for (name, p), (_, q) in zip(
        untouched.backbone.state_dict().items(), net.backbone.state_dict().items()
    ):
        assert torch.equal(p, q), name
    # A checkpoint written while the network sat in a TripletNetwork wrapper ("embedding.*" names) still loads.
    payload = torch.load(run.last_checkpoint, weights_only=False)
    payload["model"] = {f"embedding.{k}": v for k, v in payload["model"].items()}
    torch.save(payload, run.last_checkpoint)
    _, old, _ = load_network(run)
    for (name, p), (_, q) in zip(old.state_dict().items(), net.state_dict().items()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("mining", ["random", "batch_hard"])
def test_one_step_with_an_unfrozen_backbone_trains_the_backbone(sample_dataset, tmp_path, mining):
    config = _config(freeze_backbone=False, multiscale=False, mining=mining, gap=0.5)
    torch.manual_seed(config.seed)
    net = build_network(config)
    inputs = make_inputs(
        net, config, Run(tmp_path / "run"), sample_dataset.train, "train", torch.device("cpu")
    )
    assert (
        inputs.images is not None and inputs.features is None
    )  # end to end: the images, no feature cache
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_fn, miner = build_objective(config)
    triplets = TripletSampler(inputs.labels).sample(32, seed=0)
    losses = train_epoch(
        net, optimizer, loss_fn, miner, inputs, triplets, 32, torch.device("cpu"), False, 0
    )
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0
    changed = [k for k, v in net.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == list(before)  # every backbone weight moved
    assert not (tmp_path / "run" / "features").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="gap must be positive"):
        RankConfig(gap=0).validate()
    with pytest.raises(ValueError, match="unknown optimizer"):
        RankConfig(optimizer="lbfgs").validate()
    with pytest.raises(ValueError, match="unknown mining"):
        RankConfig(mining="hardest").validate()
    assert (
        RankConfig.from_dict({"mining": "hard"}).squared_distance is False
    )  # older run configs still load
    with pytest.raises(ValueError, match="batch_size"):
        RankConfig(batch_size=0).validate()
