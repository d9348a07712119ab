"""Training on 2 processes (torchrun, gloo on CPU) matches one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from neuralcodes.cli import main
from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.models.convnet import NeuralCodesConvNet


def test_two_gloo_processes_match_one_process(tmp_path, synthetic_tiny_imagenet):
    data = synthetic_tiny_imagenet(wnids=[f"n0{i}" for i in range(6)], train_per_class=16)
    # Dropout off, no augmentation, fp32: the two runs then differ only in float summation order
    # (each process's half-batch gradient, averaged by DDP, against one whole-batch gradient).
    options = [
        "--data",
        str(data),
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
        "--dropout",
        "0",
        "--no-bf16",
    ]
    assert main(["train", "--out", str(tmp_path / "one"), *options]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
    ]
    result = subprocess.run(
        [*torchrun, "-m", "neuralcodes", "train", "--out", str(tmp_path / "two"), *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert two["world_size"] == 2 and len(two["ranks"]) == 1
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    # Adam turns float-order noise in near-zero gradients into +-lr steps, so the weights are compared
    # with what training moved them: the two runs must agree far more closely than either moved.
    torch.manual_seed(0)
    init = NeuralCodesConvNet(4, dropout=0.0).state_dict()
    for key, w in one["model"].items():
        moved = (w - init[key]).abs().mean()
        assert moved > 0, key
        assert (two["model"][key] - w).abs().mean() < 0.1 * moved, key
