"""A query image that does not decode is a BadQueryImage (a ValueError) with its kind and reason,
refused before the model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuralcodes.index import BadQueryImage, Index, build_index


@pytest.fixture(scope="module")
def built(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "idx"
    build_index(path, "tiny", images=photo_folder, image_size=32)
    return path


def test_bad_query_bytes_and_files_say_why_before_the_model_loads(
    built: Path, tmp_path: Path, bomb_png: bytes
) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with Index.open(built) as index:
        with pytest.raises(
            BadQueryImage, match="^the query image cannot be used: not an image"
        ) as bad:
            index.search([b"just some text"])
        assert isinstance(bad.value, ValueError) and bad.value.kind == "unreadable"
        assert str(bad.value) == f"the query image cannot be used: {bad.value.reason}"
        with pytest.raises(BadQueryImage, match="decompression bomb") as bomb:
            index.search([bomb_png])
        assert bomb.value.kind == "too large"
        with pytest.raises(BadQueryImage, match=f"^query image {notes} cannot be used: "):
            index.search([notes])
        assert index._embedder is None  # nothing was worth embedding, so the model never loaded
