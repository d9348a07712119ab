"""Building one shard of an index: ``neuralcodes index build INDEX ... --shard K/N``.

N such commands (one machine or several sharing a file system, in any order, at the same time or not)
each list the same collection, sort it, and embed their slice of whole batches (:func:`.shards.shard_slice`)
into ``INDEX/shards/K-of-N/`` (format in :mod:`.shards`). Each is resumable like a build: run the same
command again and it continues at its first uncommitted batch. The shard that finishes last merges all
of them into the index (or ``neuralcodes index merge INDEX`` does), which then opens like any other.

Why separate commands rather than processes launched and joined by one (or torchrun): the shards never
talk to each other, so a failed or slow one stops nobody, each restarts alone, and a scheduler (SLURM,
a shell loop, torchrun's RANK/WORLD_SIZE as ``--shard $((RANK+1))/$WORLD_SIZE``) only needs a command line.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from neuralcodes import io
from neuralcodes.index.collection import Collection, Entry, LoadedImage, Skipped
from neuralcodes.index.ingest import (
    check_build_options,
    check_index_folder,
    collection_for,
    list_collection,
)
from neuralcodes.index.job import IngestSummary, load_or_skip
from neuralcodes.index.models import Embedder, ModelRef, resolve_model
from neuralcodes.index.shards import (
    MANIFEST,
    SHARD_CODES,
    SHARD_FORMAT,
    ShardsIncomplete,
    differences,
    fingerprint,
    merge_shards,
    parse_shard,
    read_shards,
    shard_folder,
    shard_slice,
)
from neuralcodes.index.store import META, SHARD_FILES, SHARDS, ShardFile, ShardFiles
from neuralcodes.progress import ProgressBar, console


@dataclass
class ShardSummary:
    """What one shard process did; ``merged``: the index it merged, when it was the last to finish."""

    shard: int
    shards: int
    files: int
    resumed_at: int
    seconds: float
    merged: IngestSummary | None = None
    waiting: str = ""  # why the shards are not merged yet

    def describe(self) -> str:
        text = f"shard {self.shard}/{self.shards}: {self.files:,} files done"
        if self.resumed_at:
            text += f" (resumed after {self.resumed_at:,})"
        text += f"; {self.seconds:.1f} s"
        if self.merged is not None:
            return text + f"\nall {self.shards} shards merged: " + self.merged.describe()
        return text + (f"\nnot merged yet: {self.waiting}" if self.waiting else "")


def build_shard(
    path: str | os.PathLike,
    model: str | ModelRef,
    shard: str | tuple[int, int],
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
    merge: bool = True,
) -> ShardSummary:
    """Embed shard K of N (``"K/N"``, K from 1) of the collection into ``path/shards``; merge if it is the last."""
    start_time = time.perf_counter()
    root = Path(path)
    k, n = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    if (root / META).exists():
        raise FileExistsError(
            f"{root} is already an index (a finished build, or its merged shards): add images "
            f"with `neuralcodes index add {root} DIR`, or build into a new folder"
        )
    check_build_options(chunk, dtype, backend, workers)
    check_index_folder(root, new=False)
    ref = model if isinstance(model, ModelRef) else resolve_model(model, layer, image_size)
    collection = collection_for(images, data, labels, exclude=root)
    entries, others = list_collection(collection)
    start, stop = shard_slice(len(entries), chunk, k, n)
    options = {
        "model": ref.to_dict(),
        "dtype": dtype,
        "backend": backend,
        "chunk": chunk,
        "labels": labels,
    }
    wanted = _manifest(k, n, (start, stop), options, collection, entries, others)
    folder = shard_folder(root, k, n)
    _check_siblings(root, folder, wanted)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder, f"shard {k}/{n} of {root}"):
        embedder = None
        if not (folder / MANIFEST).is_file():
            embedder = _start(folder, wanted, ref, device, others)
        manifest = io.read_json(folder / MANIFEST)
        mine = {key: manifest.get(key) for key in ("start", "stop")}
        if differences(wanted, manifest) or mine != {"start": start, "stop": stop}:
            raise ValueError(
                f"shard {k}/{n} in {folder} was started with other options: "
                f"{'; '.join(differences(wanted, manifest)) or 'another slice'}. Run it again with the same options, "
                f"or delete {folder} to start this shard over"
            )
        done = _embed_slice(folder, manifest, collection, entries, device, workers, embedder)
    summary = ShardSummary(k, n, stop - start, done, 0.0)
    if merge:
        _merge_if_last(root, summary)
    summary.seconds = time.perf_counter() - start_time
    return summary


def _manifest(
    k: int,
    n: int,
    bounds: tuple[int, int],
    options: dict[str, Any],
    collection: Collection,
    entries: list[Entry],
    others: list[tuple[str, Skipped]],
) -> dict[str, Any]:
    """What shard K of N records of itself (and every sibling must agree on): its slice, the options and
    the collection's fingerprint."""
    start, stop = bounds
    return {
        "format": SHARD_FORMAT,
        "shard": k,
        "shards": n,
        "start": start,
        "stop": stop,
        "options": {
            **options,
            "source": {"kind": collection.kind, "location": collection.location},
        },
        "files": len(entries),
        "non_images": len(others),
        "fingerprint": fingerprint(entries, others),
    }


def _check_siblings(root: Path, folder: Path, wanted: dict) -> None:
    """Refuse to start a shard that cannot join the shards already there (the merge would refuse it later)."""
    k, n = wanted["shard"], wanted["shards"]
    for other in read_shards(root):
        if other.folder == folder:
            continue
        if other.shards != n:
            raise ValueError(
                f"{root / SHARDS} holds a build split {other.shards} ways ({other.folder.name}), not {n}: use "
                f"--shard K/{other.shards} like the other shards, or delete {root / SHARDS} to start over with {n}"
            )
        problems = differences(wanted, other.manifest) if other.manifest is not None else []
        if problems:
            raise ValueError(
                f"shard {k}/{n} cannot join the build of {root}: {other.name} ({other.folder}) was built with other "
                f"options: {'; '.join(problems)}. Give this shard the same options as the others, or delete "
                f"{root / SHARDS} to start the whole build over"
            )


def _start(folder: Path, wanted: dict, ref: ModelRef, device: str | None, others: list) -> Embedder:
    """Create the shard's codes and records, the manifest last (a start cut short is simply redone)."""
    for leftover in (folder / SHARD_CODES, folder / SHARD_FILES):
        leftover.unlink(missing_ok=True)
    embedder = Embedder(ref, device)
    dim = embedder.embed(np.zeros((1, ref.image_size, ref.image_size, 3), np.uint8)).shape[1]
    with io.atomic_path(folder / SHARD_CODES) as tmp:
        codes = np.lib.format.open_memmap(
            tmp,
            mode="w+",
            dtype=wanted["options"]["dtype"],
            shape=(wanted["stop"] - wanted["start"], dim),
        )
        codes.flush()
        del codes
    with ShardFiles(folder) as files:
        files.start([(path, s.kind, s.reason) for path, s in others])
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    io.write_json(folder / MANIFEST, {**wanted, "dim": dim, "created": created})
    return embedder


def _embed_slice(
    folder: Path,
    manifest: dict,
    collection: Collection,
    entries: list[Entry],
    device: str | None,
    workers: int | None,
    embedder: Embedder | None,
) -> int:
    """Embed the uncommitted batches of the slice; the number of files that were done before."""
    start, stop, chunk = manifest["start"], manifest["stop"], manifest["options"]["chunk"]
    ref = ModelRef.from_dict(manifest["options"]["model"])
    with ShardFiles(folder) as files:
        done = files.done()
        if done:
            console.print(
                f"resuming shard {manifest['shard']}/{manifest['shards']}: {done:,} of "
                f"{stop - start:,} files were done"
            )
        if start + done >= stop:
            return done
        codes = np.lib.format.open_memmap(folder / SHARD_CODES, mode="r+")
        embedder = embedder or Embedder(ref, device)
        with (
            ProgressBar(
                stop - start,
                f"shard {manifest['shard']}/{manifest['shards']}",
                unit="images",
                initial=done,
            ) as bar,
            ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool,
        ):
            for pos in range(start + done, stop, chunk):
                batch = entries[pos : min(pos + chunk, stop)]
                loaded = list(
                    pool.map(lambda e: load_or_skip(collection, e, ref.image_size), batch)
                )
                # Every decodable file, duplicates too, as a single-process build embeds its batch.
                decoded = [i for i, item in enumerate(loaded) if isinstance(item, LoadedImage)]
                if decoded:
                    codes[[pos - start + i for i in decoded]] = embedder.embed(
                        np.stack([loaded[i].image.pixels for i in decoded])
                    )
                    codes.flush()  # the codes are on disk before the transaction that makes them count
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                files.commit_batch(
                    [_record(pos + i, item, now) for i, item in enumerate(loaded)],
                    pos + len(batch) - start,
                )
                bar.advance(len(batch))
        del codes
        return done


def _record(position: int, item: LoadedImage | tuple, now: str) -> ShardFile:
    if isinstance(item, LoadedImage):
        return ShardFile(
            position,
            item.entry.path,
            item.entry.label,
            item.sha256,
            *item.image.original_size,
            None,
            None,
            now,
        )
    entry, skipped = item
    return ShardFile(
        position, entry.path, entry.label, None, None, None, skipped.kind, skipped.reason, now
    )


def _merge_if_last(root: Path, summary: ShardSummary) -> None:
    try:
        summary.merged = merge_shards(root) if not (root / META).exists() else None
    except ShardsIncomplete as waiting:
        summary.waiting = f"{waiting} (the last shard to finish merges them)"
        return
    except FileExistsError:  # another shard finished at the same moment and merged first
        pass
    if summary.merged is None:
        summary.waiting = "another shard process merged them (or is merging them)"


@contextmanager
def _lock(folder: Path, what: str) -> Iterator[None]:
    """One process per shard: a second would write the same rows."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"another process is building {what}; wait for it, or run another shard"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
