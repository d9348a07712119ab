"""A sharded build on disk, its checks, and the merge of its shards into one index.

    INDEX/shards/K-of-N/manifest.json  what the shard embeds: model, options, its slice [start, stop) of the
                                       sorted file list, and a fingerprint of the whole list (all shards agree)
    INDEX/shards/K-of-N/codes.npy      (stop - start, dim) codes, memory-mapped (``np.lib.format.open_memmap``);
                                       row = position in the slice (rows of undecodable files stay zero)
    INDEX/shards/K-of-N/files.sqlite   one row per file of the slice (path, label, sha256, size, why skipped),
                                       the non-image files of the collection, and the committed count ``done``
                                       (its statements: :mod:`neuralcodes.index.store.shard_files`)

The manifest is written last when a shard starts, so a folder without one is a shard not yet started.
A batch commits as in a build (:mod:`.store`): its code rows are written and flushed, then one SQLite
transaction records its files and moves ``done``; a killed shard continues at the first uncommitted batch.

Merging replays a single-process build's bookkeeping over the shards' files in order: ids in file order,
the first file of each content (sha256) indexed and later copies skipped as duplicates (a copy in another
shard is only found here). The new index is made inside ``shards/``, its files moved into INDEX with
meta.json last, and the shards deleted: an interrupted merge leaves no half-index and simply runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from neuralcodes import io
from neuralcodes.index.collection import Entry, Skipped
from neuralcodes.index.backends import finish_backend
from neuralcodes.index.job import IngestSummary
from neuralcodes.index.models import ModelRef
from neuralcodes.index.store import (
    META,
    SHARD_FILES,
    SHARDS,
    IndexDamagedError,
    Meta,
    NewImage,
    ShardFile,
    ShardFiles,
    ShardFilesUnreadable,
    Store,
    committed_files,
)

MANIFEST, SHARD_CODES = "manifest.json", "codes.npy"
SHARD_FORMAT = "neuralcodes-index-shard"
_MERGING, _MERGE_LOCK = ".merging", ".merge.lock"
_FOLDER = re.compile(r"(\d+)-of-(\d+)")
_BLOCK_ROWS = 65536  # codes are copied into the merged index this many rows at a time

# Options every shard of one build must share (the manifest's "options"), with how to name them.
OPTION_NAMES = {
    "model": "--model/--layer/--image-size",
    "dtype": "--dtype",
    "backend": "--backend",
    "chunk": "--chunk",
    "labels": "--no-labels",
    "source": "--images/--data",
}

_MANIFEST_KEYS = {
    "format",
    "shard",
    "shards",
    "start",
    "stop",
    "options",
    "files",
    "non_images",
    "fingerprint",
    "dim",
}


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard K/N`` -> (K, N), K counted from 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(
            f"--shard must be K/N with 1 <= K <= N (shard K of N, e.g. 2/4), got {text!r}"
        )
    return int(match[1]), int(match[2])


def shard_slice(files: int, chunk: int, shard: int, shards: int) -> tuple[int, int]:
    """Positions [start, stop) of shard ``shard`` (1..shards): whole batches of ``chunk`` files, so every
    image is embedded in the same batch as by a single-process build (codes equal bit for bit)."""
    batches = -(-files // chunk)
    return min(files, (shard - 1) * batches // shards * chunk), min(
        files, shard * batches // shards * chunk
    )


def fingerprint(entries: list[Entry], others: list[tuple[str, Skipped]]) -> str:
    """sha256 of the file list (paths, labels, the non-image files): shards of one build must agree on it."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(json.dumps([entry.path, entry.label]).encode() + b"\n")
    for path, skipped in others:
        h.update(json.dumps(["other", path, skipped.kind]).encode() + b"\n")
    return h.hexdigest()


def shard_folder(root: Path, shard: int, shards: int) -> Path:
    return root / SHARDS / f"{shard}-of-{shards}"


class ShardsIncomplete(ValueError):
    """Some shards are missing or unfinished: the merge waits for them (the message names them)."""


@dataclass
class ShardInfo:
    """One shard folder as found on disk."""

    shard: int
    shards: int
    folder: Path
    manifest: (
        dict[str, Any] | None
    )  # None: the shard has not started (or its start was interrupted)
    done: int = 0

    @property
    def name(self) -> str:
        return f"shard {self.shard}/{self.shards}"

    @property
    def size(self) -> int:
        return self.manifest["stop"] - self.manifest["start"] if self.manifest else 0

    @property
    def finished(self) -> bool:
        return self.manifest is not None and self.done == self.size


def read_shards(root: Path) -> list[ShardInfo]:
    """Every ``K-of-N`` folder under ``root/shards``, by N then K."""
    found = []
    for folder in sorted((root / SHARDS).iterdir()) if (root / SHARDS).is_dir() else []:
        match = _FOLDER.fullmatch(folder.name)
        if not match or not folder.is_dir():
            continue
        info = ShardInfo(int(match[1]), int(match[2]), folder, None)
        if (folder / MANIFEST).is_file():
            redo = (
                f"delete {folder} and run its `neuralcodes index build {root} ... --shard {info.shard}/{info.shards}` "
                "again"
            )
            try:
                info.manifest = io.read_json(folder / MANIFEST)
                info.done = committed_files(folder)
            except (OSError, ValueError, TypeError, ShardFilesUnreadable) as exc:
                raise IndexDamagedError(
                    f"{info.name} ({folder}) cannot be read ({exc}): {redo}"
                ) from None
            manifest = info.manifest if isinstance(info.manifest, dict) else {}
            options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
            if manifest.get("format") != SHARD_FORMAT or not (
                _MANIFEST_KEYS <= manifest.keys() and OPTION_NAMES.keys() <= options.keys()
            ):
                raise IndexDamagedError(
                    f"{folder / MANIFEST} is not the manifest of a neuralcodes index shard: {redo}"
                )
        found.append(info)
    return sorted(found, key=lambda s: (s.shards, s.shard))


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """How two manifests disagree, in words (empty: they belong to the same build)."""
    problems = [
        f"{OPTION_NAMES[key]} ({_show(key, a['options'][key])} against {_show(key, b['options'][key])})"
        for key in OPTION_NAMES
        if a["options"].get(key) != b["options"].get(key)
    ]
    if not problems and (a["files"], a["fingerprint"]) != (b["files"], b["fingerprint"]):
        problems.append(
            f"the file list ({a['files']:,} against {b['files']:,} images, or the same number with other "
            "names or labels): the images changed between the shards' starts"
        )
    return problems


def _show(key: str, value: Any) -> str:
    if key == "model" and isinstance(value, dict):
        return ModelRef.from_dict(value).describe()
    if key == "source" and isinstance(value, dict):
        return f"{value.get('kind')} {value.get('location')}"
    return repr(value)


def check_shards(root: Path) -> list[ShardInfo]:
    """All shards of ``root``, checked to be one complete, finished build; else a clear error naming the shard."""
    found = read_shards(root)
    if not found:
        raise FileNotFoundError(
            f"{root} holds no shards to merge: build them with `neuralcodes index build {root} "
            "--model M --images DIR --shard K/N` (K = 1..N)"
        )
    counts = sorted({s.shards for s in found})
    if len(counts) > 1:
        names = ", ".join(s.folder.name for s in found)
        raise ValueError(
            f"{root / SHARDS} holds shards of builds split {' and '.join(map(str, counts))} ways ({names}): "
            "every shard of one build needs the same N in --shard K/N; delete the folders of the others"
        )
    shards = counts[0]
    started = [s for s in found if s.manifest is not None]
    for info in started[1:]:
        problems = differences(info.manifest, started[0].manifest)
        if problems:
            raise ValueError(
                f"{info.name} ({info.folder}) was built with other options than {started[0].name}: "
                f"{'; '.join(problems)}. Delete {info.folder} and run `neuralcodes index build {root} ... "
                f"--shard {info.shard}/{shards}` with {started[0].name}'s options"
            )
    have = {s.shard for s in started}
    missing = [k for k in range(1, shards + 1) if k not in have]
    if missing:
        raise ShardsIncomplete(
            f"{root}: {', '.join(f'shard {k}/{shards}' for k in missing)} not started (or cut short while starting): run "
            f"`neuralcodes index build {root} ... --shard K/{shards}` for each, with the other shards' options"
        )
    unfinished = [
        f"{s.name} ({s.done:,} of {s.size:,} files done)" for s in started if not s.finished
    ]
    if unfinished:
        raise ShardsIncomplete(
            f"{root}: {', '.join(unfinished)} unfinished: run each one's `neuralcodes index build "
            f"{root} ... --shard K/{shards}` again (it continues where it stopped)"
        )
    for info in started:
        expected = shard_slice(
            info.manifest["files"], info.manifest["options"]["chunk"], info.shard, shards
        )
        if (info.manifest["start"], info.manifest["stop"]) != expected:
            raise IndexDamagedError(
                f"{info.folder / MANIFEST} names the slice {info.manifest['start']}:"
                f"{info.manifest['stop']} but shard {info.shard}/{shards} is {expected[0]}:"
                f"{expected[1]}; delete {info.folder} and build that shard again"
            )
    return sorted(started, key=lambda s: s.shard)


@contextmanager
def merge_lock(root: Path) -> Iterator[bool]:
    """True while this process holds the merge (the shards finishing last may try at the same moment)."""
    import fcntl

    with open(root / SHARDS / _MERGE_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_shards(root: str | Path) -> IngestSummary | None:
    """Merge the finished shards of ``root`` into one index there; None if another process is merging them."""
    start_time = time.perf_counter()
    root = Path(root)
    if (root / META).exists():
        if not (root / SHARDS).is_dir():
            raise FileExistsError(f"{root} is already an index: there are no shards left to merge")
        shutil.rmtree(
            root / SHARDS, ignore_errors=True
        )  # merged, but stopped before the shards were deleted
        return None
    shards = check_shards(root)
    with merge_lock(root) as mine:
        if not mine or (root / META).exists():
            return None
        tmp = root / SHARDS / _MERGING
        if tmp.exists():
            shutil.rmtree(tmp)
        first = shards[0].manifest
        options = first["options"]
        meta = Meta(
            first["dim"],
            options["dtype"],
            options["model"],
            {"requested": options["backend"], "name": None},
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        store = Store.create(tmp, meta)
        try:
            added, skipped = _replay(store, shards)
            backend = finish_backend(store)
            store.write_report()
        finally:
            store.close()
        for part in sorted(
            tmp.iterdir(), key=lambda p: p.name == META
        ):  # meta.json last: then it is an index
            part.replace(root / part.name)
    shutil.rmtree(root / SHARDS, ignore_errors=True)
    return IngestSummary(
        "build",
        first["files"] + first["non_images"],
        added,
        skipped,
        0,
        backend,
        root / "report.csv",
        time.perf_counter() - start_time,
    )


def _replay(store: Store, shards: list[ShardInfo]) -> tuple[int, dict[str, int]]:
    """Fill the new index with the shards' files in order, as one build would have: (added, skipped by kind)."""
    options = shards[0].manifest["options"]
    job = 1
    seen: dict[str, str] = {}  # sha256 -> the path indexed with those bytes
    skipped: dict[str, int] = {}
    added = 0
    # One transaction over the whole merge: the new index (inside shards/, moved into place after) is whole or absent.
    with store.transaction(), open(store.root / "codes.bin", "r+b") as out:
        source = store.source_id(
            options["source"]["kind"], options["source"]["location"]
        )  # 1: the database is new
        with ShardFiles(shards[0].folder) as first:
            others = first.others()
        store.add_skipped(job, source, others)
        for _, kind, _ in others:
            skipped[kind] = skipped.get(kind, 0) + 1
        for info in shards:
            codes = _shard_codes(store, info)
            rows: list[int] = []
            files = _shard_files(info)
            images: list[NewImage] = []
            skips: list[tuple[str, str, str]] = []
            for position, path, label, sha, width, height, kind, reason, when in files:
                if kind is None and sha in seen:
                    kind, reason = (
                        "duplicate",
                        f"same bytes (sha256) as {seen[sha]}, which is indexed",
                    )
                if kind is not None:
                    skips.append((path, kind, reason))
                    skipped[kind] = skipped.get(kind, 0) + 1
                    continue
                seen[sha] = path
                images.append(
                    NewImage(added + len(images), source, path, label, width, height, sha, when)
                )
                rows.append(position - info.manifest["start"])
            store.add_skipped(job, source, skips)
            store.insert_images(images)
            for block in range(0, len(rows), _BLOCK_ROWS):
                out.write(np.ascontiguousarray(codes[rows[block : block + _BLOCK_ROWS]]).tobytes())
            added += len(images)
            del codes
        out.flush()
        os.fsync(out.fileno())
        for key, value in (("rows", added), ("live", added), ("jobs", job)):
            store.set_state(key, value)
    return added, skipped


def _shard_codes(store: Store, info: ShardInfo) -> np.ndarray:
    """A shard's codes (memory-mapped), checked to be its size and the index's dimension and type."""
    codes = np.load(info.folder / SHARD_CODES, mmap_mode="r")
    if codes.shape != (info.size, store.meta.dim) or codes.dtype != np.dtype(store.meta.dtype):
        raise IndexDamagedError(
            f"{info.folder / SHARD_CODES} holds {codes.dtype} {codes.shape}, not "
            f"{store.meta.dtype} ({info.size}, {store.meta.dim}); delete {info.folder} and "
            f"build {info.name} again"
        )
    return codes


def _shard_files(info: ShardInfo) -> list[ShardFile]:
    """A shard's files, checked to record every position of its slice, in order."""
    with ShardFiles(info.folder) as shard_files:
        files = shard_files.files()
    if [f.position for f in files] != list(range(info.manifest["start"], info.manifest["stop"])):
        raise IndexDamagedError(
            f"{info.folder / SHARD_FILES} does not record every file of {info.name}; "
            f"delete {info.folder} and build that shard again"
        )
    return files
