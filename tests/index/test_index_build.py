"""Building an index from a folder: the codes, the metadata, searching with a collection image, add/remove."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuralcodes.index import Index, add_images, build_index
from neuralcodes.recipes.neural_codes.train import load_trained
from neuralcodes.runs import Run


@pytest.fixture(scope="module")
def convnet_index(
    photo_folder: Path, convnet_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index of the photos made with the run's L6 codes (shared: tests only read it)."""
    path = tmp_path_factory.mktemp("convnet") / "idx"
    summary = build_index(path, str(convnet_run), images=photo_folder, layer="L6", chunk=5)
    assert summary.added == 24 and summary.skipped == {}
    return path


def test_codes_are_the_models_layer_codes_of_each_file(
    photo_folder: Path, convnet_run: Path, convnet_index: Path
) -> None:
    with Index.open(convnet_index) as index:
        records = index.browse(limit=100)
        codes = np.asarray(index.codes)
    # Reference: the run's ConvNet loaded on its own, each file decoded with PIL, normalised with numpy.
    model, _ = load_trained(Run(convnet_run), device="cpu")
    for hit in records:
        file = photo_folder / hit.path
        pixels = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255.0
        with torch.no_grad():
            l6 = model.forward_features(torch.from_numpy(pixels).permute(2, 0, 1)[None], ("L6",))[
                "L6"
            ][0].numpy()
        np.testing.assert_allclose(codes[hit.id], l6 / np.linalg.norm(l6), atol=1e-5)
        assert hit.label == hit.path.split("/")[0]
        assert hit.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
        assert (hit.width, hit.height) == (64, 64)
    assert sorted(h.path for h in records) == sorted(
        p.relative_to(photo_folder).as_posix() for p in photo_folder.rglob("*.JPEG")
    )


def test_searching_with_an_image_of_the_collection_returns_it_first(
    photo_folder: Path, convnet_index: Path
) -> None:
    queries = sorted(photo_folder.rglob("*.JPEG"))[::5]
    with Index.open(convnet_index) as index:
        results = index.search(queries, k=3)
        by_bytes = index.search([q.read_bytes() for q in queries], k=1)
        by_array = index.search(
            np.stack([np.asarray(Image.open(q).convert("RGB")) for q in queries]), k=1
        )
    for query, hits in zip(queries, results.hits):
        assert hits[0].path == query.relative_to(photo_folder).as_posix()
        assert hits[0].distance == pytest.approx(0.0, abs=1e-3)
        assert hits[0].distance <= hits[1].distance <= hits[2].distance
    np.testing.assert_array_equal(by_bytes.ids[:, 0], results.ids[:, 0])
    np.testing.assert_array_equal(by_array.ids[:, 0], results.ids[:, 0])


def test_an_imagenet_backbone_needs_no_training(sample_extractor, tmp_path: Path) -> None:
    photos = sample_extractor(tmp_path / "photos", classes=3, per_class=4)
    build_index(tmp_path / "idx", "imagenet", images=photos, image_size=96)
    query = sorted(photos.rglob("*.JPEG"))[1]
    with Index.open(tmp_path / "idx") as index:
        info = index.info()
        hits = index.search([query], k=4).hits[0]
    assert info["dim"] == 1280 and "efficientnet_lite0" in info["model"]
    assert hits[0].path == query.relative_to(photos).as_posix()
    # Pretrained features group a class: most of the 3 nearest others share the query's label.
    assert sum(h.label == hits[0].label for h in hits[1:]) >= 2


def test_add_and_remove_update_the_index_without_a_rebuild(photos: Path, tmp_path: Path) -> None:
    later = tmp_path / "later"
    shutil.move(
        str(photos / sorted(p.name for p in photos.iterdir())[-1]), later
    )  # one class folder comes later
    index_path = tmp_path / "idx"
    build_index(index_path, "tiny", images=photos, image_size=32)
    new = sorted(later.rglob("*.JPEG"))
    with Index.open(index_path) as index:
        assert len(index) == 16
        summary = index.add(later)
        assert summary.added == 8 and len(index) == 24
        first = index.search([new[2]], k=1).hits[0][0]
        assert (first.path, first.source) == (
            new[2].relative_to(later).as_posix(),
            str(later.resolve()),
        )
        assert first.label is None  # later's images sit at its top level: no class folder
        assert index.add(later).skipped == {"already indexed": 8}

        gone = sorted(photos.rglob("*.JPEG"))[0]
        with pytest.raises(ValueError, match="nothing was removed"):
            index.remove([gone, photos / "no-such.jpg"])
        assert len(index) == 24
        removed = index.remove([gone, new[2].relative_to(later).as_posix()])
        assert len(removed) == 2 and len(index) == 22
        for query in (
            gone,
            new[2],
        ):  # the removed images are never found again, not even by themselves
            hits = index.search([query], k=22).hits[0]
            assert len(hits) == 22 and all(h.id not in removed for h in hits)
    with Index.open(index_path) as index:  # and the removal is on disk
        assert len(index) == 22 and index.info()["removed"] == 2
    assert add_images(index_path, images=photos).skipped == {
        "already indexed": 15
    }  # the removed one comes back
    with Index.open(index_path) as index:
        assert (
            len(index) == 23
            and index.search([gone], k=1).hits[0][0].path == gone.relative_to(photos).as_posix()
        )


def test_a_build_refuses_to_overwrite_an_index(photo_folder: Path, tmp_path: Path) -> None:
    build_index(tmp_path / "idx", "tiny", images=photo_folder, image_size=32)
    with pytest.raises(FileExistsError, match="index add"):
        build_index(tmp_path / "idx", "tiny", images=photo_folder, image_size=32)


def test_bad_model_options_say_what_to_pass(
    photo_folder: Path, convnet_run: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="neither a run folder nor a backbone"):
        build_index(tmp_path / "a", "no-such-model", images=photo_folder)
    with pytest.raises(ValueError, match="L5, L6, L7"):
        build_index(tmp_path / "b", str(convnet_run), images=photo_folder, layer="L9")
    with pytest.raises(ValueError, match="64x64 images only"):
        build_index(tmp_path / "c", str(convnet_run), images=photo_folder, image_size=128)
    with pytest.raises(NotADirectoryError):
        build_index(tmp_path / "d", "tiny", images=tmp_path / "nowhere")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_folder_without_images_is_refused_before_any_work(
    photo_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """A wrong folder (empty, or holding no image files) is an error naming it, not an empty index."""
    import neuralcodes.index.ingest as ingest
    from neuralcodes.index import build_shard

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a folder without images")

    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    (notes / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.csv"):
        (notes / name).write_text("x")
    with monkeypatch.context() as m:
        m.setattr(ingest, "Embedder", no_model)
        with pytest.raises(ValueError, match=r"no image files in .*empty \(no files\)"):
            build_index(tmp_path / "idx", "tiny", images=empty, image_size=32)
        with pytest.raises(
            ValueError, match=r"2 other file\(s\), e\.g\. a\.txt, sub/b\.csv.*\.jpg, \.png"
        ):
            build_index(tmp_path / "idx", "tiny", images=notes, image_size=32)
        with pytest.raises(ValueError, match="no image files"):
            build_shard(tmp_path / "sharded", "tiny", "1/2", images=empty, image_size=32)
    assert not (tmp_path / "idx").exists() and not (tmp_path / "sharded").exists()

    build_index(tmp_path / "idx", "tiny", images=photo_folder, image_size=32)
    before = (tmp_path / "idx" / "codes.bin").read_bytes()
    with pytest.raises(ValueError, match="no image files"):
        add_images(tmp_path / "idx", images=empty)
    assert (tmp_path / "idx" / "codes.bin").read_bytes() == before
    with Index.open(
        tmp_path / "idx"
    ) as index:  # no unfinished job was left behind: it opens for search
        assert len(index) == 24


def test_bad_ingest_options_and_index_folders_are_refused_before_any_work(
    photo_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """--image-size 0 and --workers 0 were silently the defaults, --workers -1 failed after creating the
    folder, and a file where the index folder should go failed with a bare errno after loading the model."""
    import neuralcodes.index.ingest as ingest

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a build that cannot succeed")

    afile = tmp_path / "afile"
    afile.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("x")
    with monkeypatch.context() as m:
        m.setattr(ingest, "Embedder", no_model)
        with pytest.raises(ValueError, match="--image-size must be at least 8, got 0"):
            build_index(tmp_path / "a", "tiny", images=photo_folder, image_size=0)
        for workers in (0, -1):
            with pytest.raises(
                ValueError, match=f"--workers must be a positive number of threads, got {workers}"
            ):
                build_index(tmp_path / "b", "tiny", images=photo_folder, workers=workers)
        for target in (afile, afile / "sub.idx"):
            with pytest.raises(NotADirectoryError, match=r"afile is a file, not a folder"):
                build_index(target, "tiny", images=photo_folder, image_size=32)
        with pytest.raises(FileExistsError, match="exists and is not empty"):
            build_index(full, "tiny", images=photo_folder, image_size=32)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("existed", [False, True])
def test_a_build_that_fails_before_its_job_is_recorded_leaves_nothing_to_block_the_next(
    photos: Path, tmp_path: Path, monkeypatch, existed: bool
) -> None:
    """The index folder and its job used to be made in two steps: a failure in between (a file name SQLite
    refused) left an "index" that neither `build` (already an index) nor `add` could continue."""
    import neuralcodes.index.ingest as ingest

    path = tmp_path / "idx"
    if existed:
        path.mkdir()  # an empty folder the user made for it stays
    real = ingest.start_job

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "start_job", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(path, "tiny", images=photos, image_size=32)
    assert (path.is_dir() and not any(path.iterdir())) if existed else not path.exists()
    monkeypatch.setattr(ingest, "start_job", real)
    assert build_index(path, "tiny", images=photos, image_size=32).added == 24


def test_an_add_with_a_bad_chunk_leaves_the_index_usable(photos: Path, tmp_path: Path) -> None:
    """`index add --chunk 0` used to record a job that could never run: every later command on the
    index then asked to finish it, and finishing it failed again."""
    from neuralcodes.index.store import Store

    index = tmp_path / "idx"
    build_index(index, "tiny", images=photos, image_size=32)
    new = tmp_path / "new"
    shutil.copytree(photos, new)
    for chunk, workers in ((0, None), (8, 0)):
        with pytest.raises(ValueError, match="must be a positive number"):
            add_images(index, images=new, chunk=chunk, workers=workers)
    with Index.open(index) as opened:
        assert len(opened) == 24
    # An index left with such a job by an older version resumes it (nothing was done) with the default chunk.
    from neuralcodes.index.collection import FolderCollection
    from neuralcodes.index.ingest import list_collection
    from neuralcodes.index.job import start_job

    collection = FolderCollection(new, exclude=index)
    store = Store.open(index)
    start_job(store, "add", list_collection(collection), collection, 0)
    store.close()
    summary = add_images(index, images=new)
    assert (summary.files, summary.added, summary.skipped) == (24, 0, {"duplicate": 24})
    with Index.open(index) as opened:
        assert len(opened) == 24


def test_remove_takes_one_path_and_a_float_image_is_not_mistaken_for_codes(
    photos: Path, tmp_path: Path
) -> None:
    """`index.remove("a.jpg")` was read as the paths "a", ".", "j", ...; a float image array was
    reported as codes of the wrong dimension without saying that images must be uint8."""
    build_index(tmp_path / "idx", "tiny", images=photos, image_size=32)
    gone = sorted(photos.rglob("*.JPEG"))[0]
    with Index.open(tmp_path / "idx") as index:
        assert len(index.remove(str(gone))) == 1 and len(index) == 23
        image = np.asarray(Image.open(sorted(photos.rglob("*.JPEG"))[1]).convert("RGB"))
        with pytest.raises(ValueError, match=r"taken as codes.*image array must be uint8"):
            index.search(image.astype(np.float32) / 255)
