"""Fixtures for the index tests: a small folder of real photos (from the embedded sample) and models."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from synthetic import png_header  # tests/synthetic.py
from neuralcodes.data.sources import SAMPLE_ZIP
from neuralcodes.learning.checkpoint import save_checkpoint
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run


def extract_sample(folder: Path, classes: int = 3, per_class: int = 8, skip: int = 0) -> Path:
    """``classes`` class sub-folders of ``per_class`` Tiny ImageNet photos (64x64 JPEGs) each."""
    with zipfile.ZipFile(SAMPLE_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if "/train/" in n and n.endswith(".JPEG"))
        wnids = sorted({n.split("/")[-3] for n in names})[:classes]
        for wnid in wnids:
            files = [n for n in names if n.split("/")[-3] == wnid][skip : skip + per_class]
            (folder / wnid).mkdir(parents=True, exist_ok=True)
            for name in files:
                (folder / wnid / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    return folder


@pytest.fixture(scope="session")
def sample_extractor() -> Callable[..., Path]:
    return extract_sample


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    return png_header(30000, 30000)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 photos in 3 class folders (read-only by convention: copy it to change it)."""
    return extract_sample(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def photos(photo_folder: Path, tmp_path: Path) -> Path:
    """A private copy of ``photo_folder`` that a test may change."""
    return Path(shutil.copytree(photo_folder, tmp_path / "photos"))


@pytest.fixture(scope="session")
def convnet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `neuralcodes train` run folder whose best checkpoint is an (untrained) ConvNet of 5 classes.

    Loaded by the same code as a trained run; training one would only make the test slow.
    """
    run = Run(tmp_path_factory.mktemp("run"))
    run.write_config(ClassifyConfig(device="cpu"))
    torch.manual_seed(0)
    save_checkpoint(run.best_checkpoint, NeuralCodesConvNet(5))
    return run.root
