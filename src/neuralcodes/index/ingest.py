"""Building and extending an index: the options and folders checked, the collection listed, then its job run.

A build or an add is a *job* (:mod:`.job`): resumable batch by batch; the same command, run again after
an interruption, continues it.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from neuralcodes.data.decode import decodable_extensions
from neuralcodes.index.backends import BACKENDS
from neuralcodes.index.collection import (
    Collection,
    DataCollection,
    Entry,
    FolderCollection,
    Skipped,
)
from neuralcodes.index.job import IngestSummary, run_job, source_location, start_job
from neuralcodes.index.models import Embedder, ModelRef, resolve_model
from neuralcodes.index.store import DTYPES, META, SHARDS, Meta, Store


def check_ingest_options(chunk: int, workers: int | None) -> None:
    """The options of any build or add, checked before anything is written: a job recorded with a
    chunk of 0 could never run, and would make every later command on the index ask to finish it."""
    if chunk < 1:
        raise ValueError(f"--chunk must be a positive number of images, got {chunk}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be a positive number of threads, got {workers}")


def check_index_folder(path: Path, new: bool) -> None:
    """A folder can hold the index (``new``: an empty or absent one), said before the model loads."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NotADirectoryError(
            f"{existing} is a file, not a folder: choose a folder for the index {path}"
        )
    if new and path.is_dir() and any(path.iterdir()):
        raise FileExistsError(
            f"{path} exists and is not empty; choose a new index folder (or `neuralcodes index add` to extend it)"
        )


def check_build_options(chunk: int, dtype: str, backend: str, workers: int | None = None) -> None:
    """The options of a build (one process or a shard), checked before any model is loaded."""
    check_ingest_options(chunk, workers)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"--backend must be one of auto, {', '.join(BACKENDS)}, got {backend!r}")


def build_index(
    path: str | os.PathLike,
    model: str | ModelRef,
    images: str | os.PathLike | None = None,
    data: str | None = None,
    layer: str | None = None,
    image_size: int | None = None,
    dtype: str = "float32",
    backend: str = "auto",
    labels: bool = True,
    device: str | None = None,
    chunk: int = 64,
    workers: int | None = None,
) -> IngestSummary:
    """Embed every image of ``images`` (a folder tree) or ``data`` (a data source) into a new index at ``path``.

    Resumes an interrupted build of the same collection and model at ``path``.
    """
    path = Path(path)
    check_build_options(chunk, dtype, backend, workers)
    if (path / SHARDS).is_dir() and not (path / META).exists():
        raise FileExistsError(
            f"{path} holds a sharded build: continue it with `--shard K/N` (every shard, the same "
            "options), or delete the folder to build it in one process"
        )
    ref = model if isinstance(model, ModelRef) else resolve_model(model, layer, image_size)
    collection = collection_for(images, data, labels, exclude=path)
    embedder = None
    if (path / META).exists():
        store = _unfinished_build(path, ref, collection)
    else:
        check_index_folder(path, new=True)
        listing = list_collection(collection)  # a wrong folder fails before the model loads
        embedder = Embedder(ref, device)
        store = _new_build(path, ref, embedder, dtype, backend, listing, collection, chunk)
    try:
        return run_job(store, collection, device, workers, embedder)
    finally:
        store.close()


def _unfinished_build(path: Path, ref: ModelRef, collection: Collection) -> Store:
    """The store of the unfinished build at ``path``, if it is one of this collection with this model."""
    store = Store.open(path, allow_job=True)
    job = store.job()
    problem = None
    if job is None or job["op"] != "build":
        problem = FileExistsError(
            f"{path} is already an index; add images with `neuralcodes index add {path} DIR`"
        )
    elif (
        ModelRef.from_dict(store.meta.model) != ref
        or source_location(store, job["source"]) != collection.location
    ):
        problem = ValueError(
            f"{path} holds an unfinished build of {source_location(store, job['source'])} with "
            f"{ModelRef.from_dict(store.meta.model).describe()}; run it again with the same --model, --layer, "
            "--image-size and images, or delete the folder to start over"
        )
    if problem is not None:
        store.close()
        raise problem
    return store


def _new_build(
    path: Path,
    ref: ModelRef,
    embedder: Embedder,
    dtype: str,
    backend: str,
    listing: tuple[list[Entry], list[tuple[str, Skipped]]],
    collection: Collection,
    chunk: int,
) -> Store:
    """A new index folder at ``path`` (absent or empty) with its build job recorded."""
    dim = embedder.embed(np.zeros((1, ref.image_size, ref.image_size, 3), np.uint8)).shape[1]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    existed = path.exists()
    store = Store.create(
        path, Meta(dim, dtype, ref.to_dict(), {"requested": backend, "name": None}, created)
    )
    try:
        start_job(store, "build", listing, collection, chunk)
    except BaseException:
        # An index without its job is neither a build to resume nor an index to add to: undo the creation,
        # so that the same command, once its cause is mended, starts afresh (the folder was new or empty).
        store.close()
        for part in path.iterdir():
            if part.is_dir():
                shutil.rmtree(part)
            else:
                part.unlink()
        if not existed:
            path.rmdir()
        raise
    return store


def add_images(
    path: str | os.PathLike,
    images: str | os.PathLike | None = None,
    data: str | None = None,
    labels: bool = True,
    device: str | None = None,
    chunk: int = 64,
    workers: int | None = None,
) -> IngestSummary:
    """Add the images of a folder (or data source) to an existing index; files already in it are skipped."""
    check_ingest_options(chunk, workers)
    store = Store.open(path, allow_job=True)
    try:
        collection = collection_for(images, data, labels, exclude=Path(path))
        job = store.job()
        if job is not None:
            if job["op"] != "add" or source_location(store, job["source"]) != collection.location:
                raise ValueError(
                    f"{path} holds an unfinished `index {job['op']}` of {source_location(store, job['source'])}: "
                    f"finish it first by running that command again"
                )
        else:
            start_job(store, "add", list_collection(collection), collection, chunk)
        return run_job(store, collection, device, workers)
    finally:
        store.close()


def collection_for(
    images: str | os.PathLike | None, data: str | None, labels: bool, exclude: Path
) -> Collection:
    if (images is None) == (data is None):
        raise ValueError(
            "give the images either as a folder (--images DIR) or as a data source (--data SPEC), not both"
        )
    return (
        FolderCollection(images, labels=labels, exclude=exclude)
        if images is not None
        else DataCollection(data)
    )


def list_collection(collection: Collection) -> tuple[list[Entry], list[tuple[str, Skipped]]]:
    """The collection's image files and the others; none at all is a mistake (a wrong folder), said before any work."""
    entries, others = collection.entries()
    if not entries:
        seen = (
            f"{len(others):,} other file(s), e.g. {', '.join(p for p, _ in others[:3])}"
            if others
            else "no files"
        )
        raise ValueError(
            f"no image files in {collection.location} ({seen}); images are found by their extension "
            f"(.jpg, .png, .webp, .tif and {len(decodable_extensions()) - 4} more that Pillow reads), "
            "in the folder or any sub-folder"
        )
    return entries, others
