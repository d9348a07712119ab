"""An index of a few real photos to serve, one class of which has a label that is HTML."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from neuralcodes.data.sources import SAMPLE_ZIP
from neuralcodes.index import build_index

EVIL_LABEL = '<img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="session")
def evil_label() -> str:
    return EVIL_LABEL


@pytest.fixture(scope="session")
def served_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 photos: two class folders, the second named like an HTML element."""
    folder = tmp_path_factory.mktemp("served") / "photos"
    with zipfile.ZipFile(SAMPLE_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if "/train/" in n and n.endswith(".JPEG"))
        wnids = sorted({n.split("/")[-3] for n in names})[:2]
        for wnid, label in zip(wnids, [wnids[0], EVIL_LABEL]):
            (folder / label).mkdir(parents=True)
            for name in [n for n in names if n.split("/")[-3] == wnid][:6]:
                (folder / label / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    return folder


@pytest.fixture(scope="session")
def served_index(served_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served-index") / "idx"
    build_index(path, "tiny", images=served_photos, image_size=32)
    return path
