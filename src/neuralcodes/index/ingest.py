"""Building and extending an index: embed every image of a collection, batch by batch, resumably.

A build or an add is a *job*: its file list is written to the database when it starts, and each
batch of ``chunk`` files is committed (codes, then one SQLite transaction; see :mod:`.store`) with
the number of files done. Run the same command again after an interruption and it continues at
the first uncommitted batch. The batches are the same fixed slices of the same file list, so a
resumed build ends with the same codes, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from neuralcodes.data.decode import decodable_extensions
from neuralcodes.index.backends import (
    BACKENDS,
    IVFPQ_MIN_ROWS,
    backend_params,
    choose_backend,
    load_backend,
    new_backend,
)
from neuralcodes.index.collection import (
    Collection,
    DataCollection,
    Entry,
    FolderCollection,
    LoadedImage,
    Skipped,
    load_image,
)
from neuralcodes.index.models import Embedder, ModelRef, resolve_model
from neuralcodes.index.store import DTYPES, META, SHARDS, Meta, NewImage, Store, faiss_path
from neuralcodes.progress import ProgressBar, console


@dataclass
class IngestSummary:
    """What one build or add did (over all its runs, when resumed); ``skipped`` counts files not indexed, by kind."""

    op: str
    files: int
    added: int
    skipped: dict[str, int] = field(default_factory=dict)
    resumed_at: int = 0
    backend: str = "exact"
    report: Path | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        skipped = sum(self.skipped.values())
        text = f"index {self.op}: {self.added:,} images added, {skipped:,} files skipped"
        if skipped:
            text += (
                " ("
                + ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.skipped.items()))
                + f"; see {self.report})"
            )
        if self.resumed_at:
            text += f"; resumed after {self.resumed_at:,} files"
        return text + f"; backend {self.backend}; {self.seconds:.1f} s"


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
        store = Store.open(path, allow_job=True)
        job = store.job()
        problem = None
        if job is None or job["op"] != "build":
            problem = FileExistsError(
                f"{path} is already an index; add images with `neuralcodes index add {path} DIR`"
            )
        elif (
            ModelRef.from_dict(store.meta.model) != ref
            or _source_location(store, job["source"]) != collection.location
        ):
            problem = ValueError(
                f"{path} holds an unfinished build of {_source_location(store, job['source'])} with "
                f"{ModelRef.from_dict(store.meta.model).describe()}; run it again with the same --model, --layer, "
                "--image-size and images, or delete the folder to start over"
            )
        if problem is not None:
            store.close()
            raise problem
    else:
        check_index_folder(path, new=True)
        listing = list_collection(collection)  # a wrong folder fails before the model loads
        embedder = Embedder(ref, device)
        dim = embedder.embed(np.zeros((1, ref.image_size, ref.image_size, 3), np.uint8)).shape[1]
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        existed = path.exists()
        store = Store.create(
            path, Meta(dim, dtype, ref.to_dict(), {"requested": backend, "name": None}, created)
        )
        try:
            _start_job(store, "build", listing, collection, chunk)
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
    try:
        return _run_job(store, collection, device, workers, embedder)
    finally:
        store.close()


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
            if job["op"] != "add" or _source_location(store, job["source"]) != collection.location:
                raise ValueError(
                    f"{path} holds an unfinished `index {job['op']}` of {_source_location(store, job['source'])}: "
                    f"finish it first by running that command again"
                )
        else:
            _start_job(store, "add", list_collection(collection), collection, chunk)
        return _run_job(store, collection, device, workers)
    finally:
        store.close()


def finish_backend(store: Store, requested: str | None = None) -> str:
    """Bring the search backend up to date with the codes (building it when new or changed); its name."""
    requested = requested or store.meta.backend.get("requested") or "auto"
    rows = store.rows
    name = choose_backend(rows, store.meta.dim) if requested == "auto" else requested
    if (
        name == "ivfpq" and rows < IVFPQ_MIN_ROWS
    ):  # kept as requested: it is built once there are enough
        console.print(
            f"the ivfpq backend trains on at least {IVFPQ_MIN_ROWS:,} images and this index has {rows:,}: "
            "searching exactly until it has them"
        )
        name = "exact"
    old = store.meta.backend
    file = faiss_path(store.root, name)
    params = backend_params(
        name, rows, store.meta.dim, old.get("params") if old.get("name") == name else None
    )
    if old.get("name") == name and name != "exact" and file.exists():
        backend = load_backend(name, params, file)
        if not backend.extendable(rows):
            backend = new_backend(name, params)
    else:
        backend = new_backend(name, params)
    with console.status(f"{name} backend: indexing {rows:,} codes"):
        backend.sync(store.codes())
    if name != "exact":
        backend.save(file)
    store.set_backend({"requested": requested, "name": name, "params": params})
    for other in store.root.glob("faiss-*.index"):
        if other != file:
            other.unlink()
    return name


# --- the job -----------------------------------------------------------------------------------------


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


def _source_location(store: Store, source: int) -> str:
    location = store.source_location(source)
    return "?" if location is None else location


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


def _start_job(
    store: Store,
    op: str,
    listing: tuple[list[Entry], list[tuple[str, Skipped]]],
    collection: Collection,
    chunk: int,
) -> None:
    entries, others = listing
    # One transaction: a job is recorded whole (its source, file list, non-image files, counters) or not at all.
    with store.lock(), store.transaction():
        source = store.source_id(collection.kind, collection.location)
        number = int(store.state("jobs", "0")) + 1
        store.set_job_files([(e.path, e.label) for e in entries])
        store.add_skipped(number, source, [(p, s.kind, s.reason) for p, s in others])
        store.set_state("jobs", number)
        store.set_state("job_done", 0)
        store.set_state(
            "job",
            json.dumps(
                {
                    "op": op,
                    "source": source,
                    "total": len(entries),
                    "chunk": chunk,
                    "number": number,
                    "non_images": len(others),
                }
            ),
        )


def _run_job(
    store: Store,
    collection: Collection,
    device: str | None,
    workers: int | None,
    embedder: Embedder | None = None,
) -> IngestSummary:
    start_time = time.perf_counter()
    job = store.job()
    assert job is not None
    with store.lock():
        store.truncate_uncommitted()
        entries = [Entry(p, label) for p, label in store.job_files()]
        done = int(store.state("job_done", "0"))
        ref = ModelRef.from_dict(store.meta.model)
        if done:
            console.print(
                f"resuming the {job['op']} of {store.root}: {done:,} of {len(entries):,} files were done"
            )
        if done < len(entries):
            embedder = embedder or Embedder(ref, device)
            workers = workers or min(4, os.cpu_count() or 1)
            # A job recorded with a chunk of 0 (before the option was checked) has done nothing yet: any
            # chunk resumes it, the default does, rather than leaving the index stuck on it for good.
            chunk = job["chunk"] if job["chunk"] >= 1 else 64
            with (
                ProgressBar(len(entries), f"index {job['op']}", unit="images", initial=done) as bar,
                ThreadPoolExecutor(workers) as pool,
            ):
                for pos in range(done, len(entries), chunk):
                    batch = entries[pos : pos + chunk]
                    loaded = list(
                        pool.map(lambda e: load_or_skip(collection, e, ref.image_size), batch)
                    )
                    keep, skips = _dedupe(store, job["source"], loaded)
                    codes = _embed(embedder, job["op"], loaded, keep)
                    _commit(store, job, keep, skips, codes, pos + len(batch))
                    bar.advance(len(batch))
        backend = finish_backend(store)
        report = store.write_report()
        counts = store.skipped_counts(job["number"])
        added = _job_added(store, job)
        store.end_job(job["number"])
    return IngestSummary(
        job["op"],
        len(entries) + job["non_images"],
        added,
        counts,
        done,
        backend,
        report,
        time.perf_counter() - start_time,
    )


def _embed(
    embedder: Embedder,
    op: str,
    loaded: list[LoadedImage | tuple[Entry, Skipped]],
    keep: list[LoadedImage],
) -> np.ndarray | None:
    """The codes of ``keep``. A build runs every decodable file of the batch through the model, duplicates
    included: each image is then embedded in the same batch as in a sharded build (whose shards find the
    duplicates only when merged), and the codes agree bit for bit even where kernels depend on the batch."""
    if not keep:
        return None
    if (
        op != "build"
    ):  # an add skips already indexed files, which may be whole folders: never embed them
        return embedder.embed(np.stack([k.image.pixels for k in keep]))
    decoded = [item for item in loaded if isinstance(item, LoadedImage)]
    codes = embedder.embed(np.stack([item.image.pixels for item in decoded]))
    row = {id(item): i for i, item in enumerate(decoded)}
    return codes[[row[id(k)] for k in keep]]


def load_or_skip(
    collection: Collection, entry: Entry, size: int
) -> LoadedImage | tuple[Entry, Skipped]:
    try:
        return load_image(collection, entry, size)
    except Skipped as skipped:
        return entry, skipped


def _dedupe(
    store: Store, source: int, loaded: list[LoadedImage | tuple[Entry, Skipped]]
) -> tuple[list[LoadedImage], list[tuple[str, Skipped]]]:
    """The images to add, and the files skipped with why: unreadable, already indexed, or a duplicate."""
    keep: list[LoadedImage] = []
    skips: list[tuple[str, Skipped]] = []
    seen: dict[str, str] = {}
    here = _source_location(store, source)
    for item in loaded:
        if isinstance(item, tuple):
            skips.append((item[0].path, item[1]))
            continue
        path = item.entry.path
        if store.has_image(source, path):
            skips.append(
                (
                    path,
                    Skipped(
                        "already indexed", "already in the index (remove it first to index it anew)"
                    ),
                )
            )
            continue
        same = store.find_sha256(item.sha256)
        original = seen.get(item.sha256) or (
            same and (same.path if same.location == here else f"{same.location}/{same.path}")
        )
        if original:
            skips.append(
                (path, Skipped("duplicate", f"same bytes (sha256) as {original}, which is indexed"))
            )
            continue
        seen[item.sha256] = path
        keep.append(item)
    return keep, skips


def _commit(
    store: Store,
    job: dict,
    keep: list[LoadedImage],
    skips: list[tuple[str, Skipped]],
    codes: np.ndarray | None,
    done: int,
) -> None:
    """One batch: codes after the committed rows, then one transaction that makes them count."""
    rows = store.rows
    if codes is not None:
        store.append_codes(codes)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with store.transaction():
        store.insert_images(
            [
                NewImage(
                    rows + i,
                    job["source"],
                    k.entry.path,
                    k.entry.label,
                    *k.image.original_size,
                    k.sha256,
                    now,
                )
                for i, k in enumerate(keep)
            ]
        )
        store.add_skipped(job["number"], job["source"], [(p, s.kind, s.reason) for p, s in skips])
        store.set_state("rows", rows + len(keep))
        store.set_state("live", store.live + len(keep))
        store.set_state("job_done", done)
        store.set_state(f"job{job['number']}_added", _job_added(store, job) + len(keep))


def _job_added(store: Store, job: dict) -> int:
    return int(store.state(f"job{job['number']}_added", "0"))
