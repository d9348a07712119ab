"""Opening an index checks that its parts agree, and names the broken part with what to do."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.index import Index, IndexDamagedError, build_index
from neuralcodes.index.backends import finish_backend
from neuralcodes.index.store import Store


@pytest.fixture(scope="module")
def built(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("built") / "idx"
    build_index(path, "tiny", images=photo_folder, image_size=32, backend="flat")
    return path


@pytest.fixture
def index_copy(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "idx"))


def _edit_meta(index: Path, **changes) -> None:
    meta = json.loads((index / "meta.json").read_text())
    meta.update(changes)
    (index / "meta.json").write_text(json.dumps(meta))


def test_an_intact_index_opens(index_copy: Path) -> None:
    with Index.open(index_copy) as index:
        assert len(index) == 24 and index.info()["backend"] == "flat"


def test_a_truncated_codes_file_is_named(index_copy: Path) -> None:
    with open(index_copy / "codes.bin", "r+b") as f:
        f.truncate(23 * 32 * 4 + 10)
    with pytest.raises(
        IndexDamagedError,
        match=r"codes\.bin holds 2,954 bytes .* records 24 rows.*truncated.*rebuild",
    ):
        Index.open(index_copy)


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM images WHERE id = 3",
        "INSERT INTO images VALUES (99, 1, 'extra.jpg', NULL, 1, 1, 'feed', 'now')",
    ],
)
def test_a_database_whose_row_count_is_off_is_named(index_copy: Path, change: str) -> None:
    with sqlite3.connect(index_copy / "metadata.sqlite") as db:
        db.execute(change)
    with pytest.raises(
        IndexDamagedError,
        match=r"metadata\.sqlite: the images table holds 2[35] rows but the index recorded 24",
    ):
        Index.open(index_copy)


def test_a_damaged_database_file_is_named(index_copy: Path) -> None:
    (index_copy / "metadata.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(
        IndexDamagedError, match=r"metadata\.sqlite is not a readable SQLite database"
    ):
        Index.open(index_copy)


def test_another_format_version_or_dimension_is_named(index_copy: Path) -> None:
    _edit_meta(index_copy, version=99)
    with pytest.raises(
        IndexDamagedError, match=r"meta\.json: index format version 99.*reads version 1"
    ):
        Index.open(index_copy)
    _edit_meta(
        index_copy, version=1, dim=64
    )  # the codes file no longer holds 24 rows of this dimension
    with pytest.raises(IndexDamagedError, match=r"codes\.bin .* rows of 64 float32"):
        Index.open(index_copy)


def test_a_missing_part_is_named(index_copy: Path) -> None:
    (index_copy / "faiss-flat.index").unlink()
    with pytest.raises(IndexDamagedError, match=r"faiss-flat\.index is missing.*index backend"):
        Index.open(index_copy)
    (index_copy / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="is not a neuralcodes index"):
        Index.open(index_copy)


def test_a_stale_faiss_index_is_named(index_copy: Path, tmp_path: Path, sample_extractor) -> None:
    other = tmp_path / "other"
    build_index(
        other,
        "tiny",
        images=sample_extractor(tmp_path / "few", classes=2, per_class=3),
        image_size=32,
        backend="flat",
    )
    shutil.copy(other / "faiss-flat.index", index_copy / "faiss-flat.index")
    with pytest.raises(
        IndexDamagedError, match=r"faiss-flat\.index holds 6 codes .* the index has 24"
    ):
        Index.open(index_copy)


def test_a_changed_model_is_refused(index_copy: Path, photo_folder: Path) -> None:
    model = json.loads((index_copy / "meta.json").read_text())["model"]
    _edit_meta(
        index_copy, model={**model, "source": "efficientnet_lite0", "weights_sha256": "0" * 64}
    )
    with (
        Index.open(index_copy) as index,
        pytest.raises(ValueError, match="not the one the index was built with"),
    ):
        index.search([next(photo_folder.rglob("*.JPEG"))])


def test_switching_backends_keeps_the_results(index_copy: Path, photo_folder: Path) -> None:
    queries = sorted(photo_folder.rglob("*.JPEG"))[::4]
    with Index.open(index_copy) as index:
        flat = index.search(queries, k=8)
    store = Store.open(index_copy)
    assert finish_backend(store, "exact") == "exact"
    store.close()
    assert not (index_copy / "faiss-flat.index").exists()
    with Index.open(index_copy) as index:
        exact = index.search(queries, k=8)
        assert index.info()["backend"] == "exact"
    assert (flat.ids == exact.ids).all()


def test_an_inner_product_faiss_index_of_an_older_version_is_rebuilt(index_copy: Path) -> None:
    """Older versions wrote inner-product FAISS indexes (wrong candidates for float16 codes): switching to
    the same backend again must rebuild the file with the L2 metric, not keep extending the old one."""
    import faiss

    with Index.open(index_copy) as index:
        old = faiss.IndexFlatIP(index.store.meta.dim)
        old.add(np.asarray(index.codes, dtype=np.float32))
    faiss.write_index(old, str(index_copy / "faiss-flat.index"))
    store = Store.open(index_copy)
    assert finish_backend(store, "flat") == "flat"
    store.close()
    assert faiss.read_index(str(index_copy / "faiss-flat.index")).metric_type == faiss.METRIC_L2
