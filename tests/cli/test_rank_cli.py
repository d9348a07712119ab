"""`neuralcodes rank train` then `rank evaluate`, end to end through the command line, on the embedded sample."""

import json

import numpy as np

from neuralcodes.cli import main


def test_rank_train_then_evaluate_on_the_embedded_sample(tmp_path, capsys):
    out = tmp_path / "rank"
    train = [
        "rank",
        "train",
        "--out",
        str(out),
        "--backbone",
        "tiny",
        "--no-pretrained",
        "--embedding-dim",
        "16",
        "--epochs",
        "1",
        "--triplets-per-epoch",
        "320",
        "--batch-size",
        "64",
        "--eval-triplets",
        "400",
        "--lr",
        "0.003",
        "--mining",
        "batch_hard",
        "--squared-distance",
        "--no-bf16",
        "--device",
        "cpu",
        "--seed",
        "2",
    ]
    assert main(train) == 0

    config = json.loads((out / "config.json").read_text())
    assert (config["kind"], config["backbone"], config["mining"], config["squared_distance"]) == (
        "deep_ranking",
        "tiny",
        "batch_hard",
        True,
    )
    assert config["data"] is None and config["epochs"] == 1  # the embedded sample
    for name in (
        "checkpoints/last.pt",
        "history.json",
        "history.csv",
        "loss_iterations.csv",
        "figures/ranking_loss.png",
        "triplets/epoch_000.npy",
        "features/train.npy",
        "features/val.npy",
    ):
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    for h in history:
        assert np.isfinite(h["loss"]) and h["loss"] >= 0
        assert (
            0 <= h["train_similarity_precision"] <= 1 and 0 <= h["test_similarity_precision"] <= 1
        )
    assert (
        len((out / "loss_iterations.csv").read_text().splitlines()) == 1 + 5
    )  # header + 320 / 64 iterations
    capsys.readouterr()
    assert main(["status", str(out)]) == 0  # a finished run is not offered --resume
    status = capsys.readouterr().err
    assert "stage: done" in status and "--resume" not in status

    assert main(["rank", "evaluate", str(out), "--max-queries", "90"]) == 0
    ranking = json.loads((out / "metrics.json").read_text())["ranking"]
    retrieval = ranking["retrieval"]
    assert (
        retrieval["n_queries"] == 90
        and retrieval["n_database"] == 3000
        and retrieval["queries"] == "val"
    )
    assert 0 < retrieval["mAP"] <= 1 and 0 <= retrieval["P@10"] <= 1 and 0 <= retrieval["P@30"] <= 1
    # 30 classes of equal size: a random ranking scores about 1/30 (e.g. labels out of step with the codes).
    # Learning itself is checked in tests/recipes; here the codes of a tiny net need only beat chance.
    assert retrieval["mAP"] > 1.2 / 30 and retrieval["P@10"] > 1.2 / 30
    assert ranking["epochs_trained"] == 1 and 0.5 < ranking["similarity_precision"]["test"] <= 1
    for figure in ranking["figures"]:
        assert (out / figure).stat().st_size > 10_000, figure

    # Asked again without --resume, the finished run is refused with a message, not a traceback.
    assert main(train) == 2


def test_rank_evaluate_without_a_trained_run_is_an_error(tmp_path, capsys):
    assert main(["rank", "evaluate", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert "error" in captured.out + captured.err and "missing" in captured.out + captured.err
