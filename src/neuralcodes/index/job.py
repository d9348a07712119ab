"""The job of a build or an add: its file list recorded, then batch after batch loaded, checked for
duplicates, embedded and committed, resumably.

A job's file list is written to the database when it starts, and each batch of ``chunk`` files is
committed (codes, then one SQLite transaction; see :mod:`.store`) with the number of files done. Run
the same command again after an interruption and it continues at the first uncommitted batch. The
batches are the same fixed slices of the same file list, so a resumed build ends with the same codes,
bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from neuralcodes.index.backends import finish_backend
from neuralcodes.index.collection import Collection, Entry, LoadedImage, Skipped, load_image
from neuralcodes.index.models import Embedder, ModelRef
from neuralcodes.index.store import NewImage, Store
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


def source_location(store: Store, source: int) -> str:
    """Where a source of the index is (its folder or data spec), "?" if unknown."""
    location = store.source_location(source)
    return "?" if location is None else location


def start_job(
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


def run_job(
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
    here = source_location(store, source)
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
        # An open Index (a server) picks an add's batch up on its next request. A build is not open anywhere
        # (Store.open refuses an unfinished one) and ends with the same tables however it ran (in one go,
        # resumed, sharded): its generation moves once, when its backend is finished.
        if keep and job["op"] != "build":
            store.bump_generation()
        store.set_state(f"job{job['number']}_added", _job_added(store, job) + len(keep))


def _job_added(store: Store, job: dict) -> int:
    return int(store.state(f"job{job['number']}_added", "0"))
