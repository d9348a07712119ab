import json

import numpy as np
import pytest
import torch

import neuralcodes.recipes.deep_ranking.train as ranking
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.train import load_network, train_ranking


def _config(**kw):
    base = dict(backbone="tiny", pretrained=False, freeze_backbone=True, multiscale=True, embedding_dim=16,
                batch_size=64, epochs=3, triplets_per_epoch=1024, eval_triplets=1000, lr=0.003, seed=3, bf16=False,
                device="cpu")
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

    real_epoch, calls = ranking.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(ranking, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_ranking(config, tmp_path / "cut", dataset=sample_dataset)
    monkeypatch.setattr(ranking, "train_epoch", real_epoch)
    with pytest.raises(FileExistsError, match="--resume"):
        train_ranking(config, tmp_path / "cut", dataset=sample_dataset)
    resumed = train_ranking(config, tmp_path / "cut", dataset=sample_dataset, resume=True)

    _, a, pa = load_network(full)
    _, b, pb = load_network(resumed)
    assert pa["epoch"] == pb["epoch"] == 2
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert [h["loss"] for h in full.history()] == pytest.approx([h["loss"] for h in resumed.history()], abs=1e-6)
    # A different configuration is refused on resume.
    with pytest.raises(ValueError, match="different configuration"):
        train_ranking(_config(epochs=2, triplets_per_epoch=256, eval_triplets=300, multiscale=False, lr=0.1), tmp_path / "cut", dataset=sample_dataset, resume=True)


def test_frozen_backbone_features_are_cached_and_reused(sample_dataset, tmp_path, monkeypatch):
    config = _config(epochs=1, triplets_per_epoch=256, eval_triplets=300)
    run = train_ranking(config, tmp_path / "frozen", dataset=sample_dataset)
    feats = np.load(run.root / "features" / "train.npy")
    assert feats.shape == (len(sample_dataset.train), 32)
    assert not (run.root / "features" / "train_parts").exists()
    _, net, _ = load_network(run)
    x = torch.from_numpy(np.array(sample_dataset.train.images[:4])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = net.embedding.backbone(x).numpy()
    np.testing.assert_allclose(feats[:4], expected, rtol=1e-2, atol=1e-2)  # stored as float16
    # The backbone of a frozen run does not change in training.
    torch.manual_seed(config.seed)
    untouched = ranking.build_network(config)
    for (name, p), (_, q) in zip(untouched.embedding.backbone.state_dict().items(), net.embedding.backbone.state_dict().items()):
        assert torch.equal(p, q), name


def test_config_validation():
    with pytest.raises(ValueError, match="gap must be positive"):
        RankConfig(gap=0).validate()
    with pytest.raises(ValueError, match="unknown optimizer"):
        RankConfig(optimizer="lbfgs").validate()
    with pytest.raises(ValueError, match="unknown mining"):
        RankConfig(mining="hardest").validate()
    with pytest.raises(ValueError, match="batch_size"):
        RankConfig(batch_size=0).validate()
