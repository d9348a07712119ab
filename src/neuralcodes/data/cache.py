"""Decode a source's images once into uint8 arrays, so that later runs start in about a second.

One folder per source version under the cache directory (``NEURALCODES_CACHE``, else
``~/.cache/neuralcodes``), named by the source's checksum::

    <name>-<sha256[:16]>-<size>px/
        meta.json            classes, counts, conversions, skipped files (written last)
        train_images.npy     uint8 (N, size, size, 3), opened with ``np.load(mmap_mode="r")``
        train_labels.npy     int64 (N,)
        train_files.txt      one source path per line
        val_*.npy / .txt     the same for the official validation set, when the source has one

The folder is built under a temporary name and renamed into place when complete, so a crash
leaves no half cache; a folder whose ``meta.json`` is missing or of another format is rebuilt.
Decoding runs in a process pool over chunks of images, each worker writing its slice of the
memory-mapped output directly (no pixels are pickled back).
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralcodes import io
from neuralcodes.data.decode import CorruptImageError, decode_image
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.data.listing import Source, SourceListing, SplitListing
from neuralcodes.progress import ProgressBar

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CHUNK_SIZE = 1000
_HASH_CHUNK = 1 << 20
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def default_cache_dir() -> Path:
    """``$NEURALCODES_CACHE`` if set, else ``~/.cache/neuralcodes``."""
    env = os.environ.get("NEURALCODES_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neuralcodes"


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """sha256 of a file, remembered in ``cache_dir/checksums.json`` by path, size and mtime.

    Hashing a 220 MB archive takes about a second; a warm load should not pay it again.
    """
    path = Path(path).resolve()
    stat = path.stat()
    memo_path = Path(cache_dir) / "checksums.json"
    try:
        memo = io.read_json(memo_path)
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(path))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f, ProgressBar(stat.st_size, f"sha256 {path.name}", unit="B") as bar:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
            bar.advance(len(chunk))
    memo[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": h.hexdigest()}
    io.write_json(memo_path, memo)
    return h.hexdigest()


def load_or_build(
    source: Source,
    cache_dir: str | os.PathLike | None = None,
    skip_corrupt: bool = False,
    image_size: int = 64,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Dataset:
    """The source's decoded images: from its cache folder if complete, else decoded into it first.

    With ``skip_corrupt`` unreadable images are left out and listed in ``meta.json``; without it
    the first one raises :class:`CorruptImageError` (also when a cache built with skipping is
    opened without it, so a run never silently uses fewer images than it asked for).
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    checksum = source.checksum(cache_dir)
    folder = cache_dir / f"{_safe_name(source.name)}-{checksum[:16]}-{image_size}px"
    dataset = open_cache(folder, checksum, skip_corrupt)
    if dataset is not None:
        return dataset
    if folder.exists():
        log.warning("cache %s is incomplete or of an older format; rebuilding it", folder)
        shutil.rmtree(folder)
    build_cache(source, folder, checksum, skip_corrupt, image_size, workers, chunk_size)
    dataset = open_cache(folder, checksum, skip_corrupt)
    if dataset is None:  # only if another process replaced the folder with something broken
        raise RuntimeError(f"the cache just built at {folder} cannot be read back; delete it and try again")
    return dataset


def open_cache(folder: str | os.PathLike, checksum: str | None = None, skip_corrupt: bool = False) -> Dataset | None:
    """The dataset in a complete cache folder (images memory-mapped), or None if it is missing,
    partial, of another format or (when ``checksum`` is given) of another source version."""
    folder = Path(folder)
    try:
        meta = io.read_json(folder / "meta.json")
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or (checksum is not None and meta.get("checksum") != checksum):
        return None
    try:
        sets = {split: _open_split(folder, split, meta) for split in meta["splits"]}
    except (OSError, ValueError, KeyError):
        return None
    if meta["skipped_count"] and not skip_corrupt:
        names = [s["file"] for split in meta["splits"].values() for s in split["skipped"]]
        raise CorruptImageError(
            f"the cache {folder} was built with skip_corrupt=True and leaves out {len(names)} unreadable "
            f"image(s) ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); pass skip_corrupt=True "
            f"(CLI: --skip-corrupt) to use it."
        )
    return Dataset(name=meta["name"], train=sets["train"], val=sets.get("val"), checksum=meta["checksum"])


def build_cache(
    source: Source,
    folder: Path,
    checksum: str,
    skip_corrupt: bool = False,
    image_size: int = 64,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Decode every image of ``source`` into ``folder`` (built under a temporary name, then renamed)."""
    started = time.perf_counter()
    listing = source.listing(image_size)
    splits = {"train": listing.train}
    if listing.val is not None:
        splits["val"] = listing.val
    _remove_stale_temps(folder)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        reports = _decode_all(source, listing, splits, tmp, skip_corrupt, workers, chunk_size)
        split_meta = {name: _finish_split(tmp, name, split, reports[name], source) for name, split in splits.items()}
        seconds = time.perf_counter() - started
        io.write_json(tmp / "meta.json", {
            "format": CACHE_FORMAT,
            "name": source.name,
            "source": source.location,
            "checksum": checksum,
            "layout": listing.layout,
            "image_size": listing.image_size,
            "resize": listing.resize,
            "class_ids": listing.class_ids,
            "class_names": listing.class_names,
            "class_full_names": listing.class_full_names,
            "notes": listing.notes,
            "splits": split_meta,
            "skipped_count": sum(m["skipped_count"] for m in split_meta.values()),
            "grayscale_count": sum(m["grayscale"] for m in split_meta.values()),
            "build_seconds": round(seconds, 2),
        })
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for note in listing.notes:
        log.info("%s: %s", source.name, note)
    total = sum(m["count"] for m in split_meta.values())
    log.info("decoded %d images of %s in %.1f s into %s", total, source.location, seconds, folder)


@dataclass
class _ChunkReport:
    split: str
    count: int
    modes: Counter = field(default_factory=Counter)
    resized: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)


def _decode_chunk(
    source: Source, split: str, files: list[str], start: int, out_path: Path, size: int, resize: bool,
    skip_corrupt: bool,
) -> _ChunkReport:
    """Decode ``files`` into rows ``start:`` of the memory-mapped array at ``out_path``."""
    out = np.load(out_path, mmap_mode="r+")
    report = _ChunkReport(split, len(files))
    for offset, name in enumerate(files):
        try:
            pixels, mode, original_size = decode_image(source.read(name), name, size, resize, where=source.location)
        except CorruptImageError as exc:
            if not skip_corrupt:
                raise
            report.skipped.append((start + offset, name, str(exc).split(". Use skip_corrupt")[0]))
            continue
        out[start + offset] = pixels
        if mode != "RGB":
            report.modes[mode] += 1
        if original_size != (size, size):
            report.resized += 1
    del out  # no msync: the pages are shared with the parent, and forcing them to disk costs ~half the build
    return report


def _decode_all(
    source: Source, listing: SourceListing, splits: dict[str, SplitListing], tmp: Path, skip_corrupt: bool,
    workers: int | None, chunk_size: int,
) -> dict[str, list[_ChunkReport]]:
    size = listing.image_size
    tasks = []
    for name, split in splits.items():
        out_path = tmp / f"{name}_images.npy"
        np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(split.files), size, size, 3)).flush()
        for start in range(0, len(split.files), chunk_size):
            files = split.files[start:start + chunk_size]
            tasks.append((source, name, files, start, out_path, size, listing.resize, skip_corrupt))
    reports: dict[str, list[_ChunkReport]] = {name: [] for name in splits}
    workers = min(workers or _available_cpus(), len(tasks))
    total = sum(len(s.files) for s in splits.values())
    if workers <= 1:
        with ProgressBar(total, f"decode {source.name}", unit="img") as bar:
            for task in tasks:
                report = _decode_chunk(*task)
                reports[report.split].append(report)
                bar.advance(report.count, status=report.split)
        return reports
    # fork: workers need no re-import of the caller's __main__; they only run PIL and numpy.
    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    pool: Executor = ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures: list[Future] = [pool.submit(_decode_chunk, *task) for task in tasks]
        with ProgressBar(total, f"decode {source.name} ({workers} workers)", unit="img") as bar:
            for future in as_completed(futures):
                report = future.result()
                reports[report.split].append(report)
                bar.advance(report.count, status=report.split)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return reports


def _finish_split(tmp: Path, name: str, split: SplitListing, reports: list[_ChunkReport], source: Source) -> dict:
    """Drop skipped rows, write labels and file names; return the split's entry of meta.json."""
    skipped = sorted(s for r in reports for s in r.skipped)
    keep = np.setdiff1d(np.arange(len(split.files)), [s[0] for s in skipped]) if skipped else None
    if keep is not None:
        if len(keep) == 0:
            raise CorruptImageError(f"none of the {len(split.files)} {name} images of {source.location} can be decoded")
        _compact(tmp / f"{name}_images.npy", keep)
    labels = np.asarray(split.labels, dtype=np.int64)
    files = split.files
    if keep is not None:
        labels = labels[keep]
        files = [files[i] for i in keep]
    np.save(tmp / f"{name}_labels.npy", labels)
    (tmp / f"{name}_files.txt").write_text("".join(f + "\n" for f in files), encoding="utf-8")
    modes = sum((r.modes for r in reports), Counter())
    for _, file, error in skipped:
        log.warning("skipped unreadable image %s: %s", file, error)
    return {
        "count": len(files),
        "grayscale": sum(n for mode, n in modes.items() if mode in _GRAYSCALE_MODES),
        "converted_modes": dict(sorted(modes.items())),
        "resized": sum(r.resized for r in reports),
        "skipped_count": len(skipped),
        "skipped": [{"file": file, "error": error} for _, file, error in skipped],
    }


def _compact(path: Path, keep: np.ndarray) -> None:
    src = np.load(path, mmap_mode="r")
    compact_path = path.with_suffix(".compact.npy")
    dst = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8, shape=(len(keep),) + src.shape[1:])
    for a in range(0, len(keep), 4096):
        dst[a:a + 4096] = src[keep[a:a + 4096]]
    dst.flush()
    del dst, src
    os.replace(compact_path, path)


def _open_split(folder: Path, split: str, meta: dict) -> ImageSet:
    images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
    labels = np.load(folder / f"{split}_labels.npy")
    files = (folder / f"{split}_files.txt").read_text(encoding="utf-8").splitlines()
    count = meta["splits"][split]["count"]
    size = meta["image_size"]
    if images.shape != (count, size, size, 3) or len(labels) != count or len(files) != count:
        raise ValueError(f"cache {folder} is inconsistent")
    return ImageSet(images=images, labels=labels, class_ids=list(meta["class_ids"]),
                    class_names=list(meta["class_names"]), files=files)


def _move_into_place(tmp: Path, folder: Path) -> None:
    try:
        os.rename(tmp, folder)
    except OSError:
        if (folder / "meta.json").is_file():  # another process finished the same cache first
            return
        raise


def _remove_stale_temps(folder: Path, max_age_s: float = 6 * 3600) -> None:
    """Temporary folders left by crashed builds of this cache (live builds are far younger)."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
