"""Other collections and options: a data source (zip) as `--data` takes it, float16 codes, empty folders."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.index import Index, build_index


def _tiny_imagenet_zip(photos: Path, path: Path) -> Path:
    """A Tiny ImageNet-layout archive of the photos: train/<wnid>/images/ and a validation split."""
    wnids = sorted(p.name for p in photos.iterdir())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny/wnids.txt", "".join(w + "\n" for w in wnids))
        archive.writestr("tiny/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids))
        lines = []
        for wnid in wnids:
            files = sorted((photos / wnid).glob("*.JPEG"))
            for file in files[:-1]:
                archive.writestr(f"tiny/train/{wnid}/images/{file.name}", file.read_bytes())
            lines.append(f"val_{wnid}.JPEG\t{wnid}\t0\t0\t63\t63\n")
            archive.writestr(f"tiny/val/images/val_{wnid}.JPEG", files[-1].read_bytes())
        archive.writestr("tiny/val/val_annotations.txt", "".join(lines))
    return path


def test_a_data_source_is_indexed_with_its_labels(photo_folder: Path, tmp_path: Path) -> None:
    archive = _tiny_imagenet_zip(photo_folder, tmp_path / "tiny.zip")
    summary = build_index(tmp_path / "idx", "tiny", data=str(archive), image_size=32)
    assert summary.added == 24
    with Index.open(tmp_path / "idx") as index, zipfile.ZipFile(archive) as zf:
        hits = index.browse(limit=100)
        assert {h.source for h in hits} == {str(archive.resolve())}
        val = [h for h in hits if "/val/" in h.path]
        # Labels are the source's class names (words.txt), as training shows them.
        assert len(val) == 3 and all(
            h.path == f"tiny/val/images/val_{h.label.removeprefix('thing ')}.JPEG" for h in val
        )
        assert index.read_image(val[0].id) == zf.read(
            val[0].path
        )  # thumbnails and files come from the zip
        found = index.search([zf.read(val[1].path)], k=1).hits[0][0]
    assert found.id == val[1].id


def test_float16_codes_take_half_the_space_and_find_the_same_images(
    photo_folder: Path, tmp_path: Path
) -> None:
    build_index(tmp_path / "f32", "tiny", images=photo_folder, image_size=32)
    build_index(tmp_path / "f16", "tiny", images=photo_folder, image_size=32, dtype="float16")
    assert (tmp_path / "f16" / "codes.bin").stat().st_size * 2 == (
        tmp_path / "f32" / "codes.bin"
    ).stat().st_size
    queries = sorted(photo_folder.rglob("*.JPEG"))[::6]
    with Index.open(tmp_path / "f32") as f32, Index.open(tmp_path / "f16") as f16:
        np.testing.assert_allclose(np.asarray(f16.codes, np.float32), f32.codes, atol=1e-3)
        assert f16.info()["dtype"] == "float16"
        assert (f16.search(queries, k=1).ids == f32.search(queries, k=1).ids).all()


def test_an_index_emptied_by_remove_says_so_on_search(photo_folder: Path, tmp_path: Path) -> None:
    # (A folder without images is refused at build: tests/index/test_index_build.py.)
    one = tmp_path / "one"
    one.mkdir()
    (tmp_path / "one" / "a.JPEG").write_bytes(next(photo_folder.rglob("*.JPEG")).read_bytes())
    build_index(tmp_path / "idx", "tiny", images=one, image_size=32, backend="hnsw")
    with Index.open(tmp_path / "idx") as index:
        index.remove([one / "a.JPEG"])
        assert len(index) == 0
        with pytest.raises(ValueError, match="holds no images.*index add"):
            index.search(np.ones((1, 32), np.float32))


def test_ivfpq_waits_for_enough_images(photo_folder: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", "tiny", images=photo_folder, image_size=32, backend="ivfpq")
    with Index.open(tmp_path / "idx") as index:
        info = index.info()
        assert (info["backend"], info["backend_requested"]) == ("exact", "ivfpq")
        assert len(index.search([next(photo_folder.rglob("*.JPEG"))], k=3).hits[0]) == 3
