"""The tuned recipe's training on 2 processes (torchrun, gloo on CPU) matches one process with the same global batch:
the ResNet/tiny classifier, and fine-tuning for retrieval, whose loss must see the whole batch's codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuned_support import untrained_base

from neuralcodes.cli import main
from neuralcodes.data.sources import load_dataset
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.models.resnet import MapClassifier

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]


def two_processes(*args: str) -> None:
    result = subprocess.run(
        [*TORCHRUN, "-m", "neuralcodes", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_training(
    one: Path,
    two: Path,
    figures: tuple[str, ...],
    start: dict[str, torch.Tensor],
    rel: float = 1e-4,
    closer: float = 0.1,
) -> None:
    a, b = (
        load_checkpoint(one / "checkpoints" / "last.pt"),
        load_checkpoint(two / "checkpoints" / "last.pt"),
    )
    assert b["world_size"] == 2 and len(b["ranks"]) == 1
    assert len(a["history"]) == len(b["history"]) >= 2 and all(
        f in a["history"][-1] for f in figures
    )
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha.keys() == hb.keys()
        for name in (
            f for f in figures if f in ha
        ):  # epoch 0 (the starting weights' scores) has no training figures
            assert hb[name] == pytest.approx(ha[name], rel=rel, abs=1e-6), (ha["epoch"], name)
    # Adam turns float-order noise in near-zero gradients into +-lr steps: the two runs must agree far
    # more closely than either moved from where it started.
    moved_any = False
    for key, w in a["model"].items():
        if not w.is_floating_point() or key not in start or "running_" in key:
            continue  # batch norm's running statistics are the first process's shard's
        moved = (w - start[key]).abs().mean()
        moved_any |= bool(moved > 0)
        if moved > 0:
            assert (b["model"][key] - w).abs().mean() < closer * moved, key
    assert moved_any


def test_a_classifier_trains_on_two_gloo_processes_as_on_one(tmp_path, synthetic_tiny_imagenet):
    data = synthetic_tiny_imagenet(wnids=[f"n0{i}" for i in range(8)], train_per_class=16)
    # fp32, no augmentation, no dropout: the runs then differ only in float summation order and batch norm.
    classifier = [
        "--data",
        str(data),
        "--arch",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--n-ood",
        "2",
        "--patience",
        "5",
        "--device",
        "cpu",
        "--no-bf16",
        "--no-augment",
        "--dropout",
        "0",
    ]
    assert main(["tuned", "classifier", "--out", str(tmp_path / "one"), *classifier]) == 0
    two_processes("tuned", "classifier", "--out", str(tmp_path / "two"), *classifier)
    torch.manual_seed(0)
    start = MapClassifier(6, "tiny").state_dict()
    # Its batch norm normalises by each process's half-batch on CPU (no SyncBatchNorm under gloo): close, not equal.
    assert_same_training(
        tmp_path / "one", tmp_path / "two", ("train_loss", "val_loss"), start, rel=2e-2, closer=0.5
    )
    assert '"processes": 2' in (tmp_path / "two" / "metrics.json").read_text()


def test_fine_tuning_on_two_gloo_processes_compares_the_whole_batch(
    tmp_path, synthetic_tiny_imagenet
):
    archive = str(synthetic_tiny_imagenet(wnids=[f"n0{i}" for i in range(8)], train_per_class=16))
    base = untrained_base(tmp_path / "base", load_dataset(archive), n_ood=2, data=archive)
    # Every triplet of the batch: on one process the loss sees all 16 codes; on two, each process holds 8
    # and the loss must still compare all 16. Batch norm is frozen (the default), fp32: the runs differ
    # only in float summation order.
    tuned = [
        "--base",
        str(base),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--m-per-class",
        "4",
        "--batches-per-epoch",
        "3",
        "--val-images",
        "40",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--no-bf16",
        "--patience",
        "5",
        "--mining",
        "all",
    ]
    assert main(["tuned", "train", "--out", str(tmp_path / "one"), *tuned]) == 0
    two_processes("tuned", "train", "--out", str(tmp_path / "two"), *tuned)
    weights = load_checkpoint(base / "checkpoints" / "best.pt")["model"]
    start = {
        f"feature_map.{k.removeprefix('features.')}": v
        for k, v in weights.items()
        if k.startswith("features.")
    }
    start["pooling.p"] = torch.tensor([3.0])
    # The triplet figures too: each process measures the whole batch (gathered), not its own 8 codes.
    figures = (
        "train_loss",
        "train_p",
        "train_active",
        "train_loss_all",
        "train_d_ap",
        "train_spread",
        "val_mAP",
        "val_mAP@R",
    )
    assert_same_training(tmp_path / "one", tmp_path / "two", figures, start)
    assert '"processes": 2' in (tmp_path / "two" / "metrics.json").read_text()
