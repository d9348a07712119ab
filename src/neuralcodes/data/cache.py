"""Decode a source's images once into uint8 arrays, so that later runs start in about a second.

One folder per source version under the cache directory (``NEURALCODES_CACHE``, else
``~/.cache/neuralcodes``), named by the source's checksum::

    <name>-<sha256[:16]>-<size>px/
        meta.json            classes, counts, conversions, skipped files, checksums (written last)
        train_images.npy     uint8 (N, size, size, 3), opened with ``np.load(mmap_mode="r")``
        train_labels.npy     int64 (N,)
        train_files.txt      one source path per line (UTF-8)
        train_rows.npy       uint32 (N,): CRC-32 of each image row
        val_*.npy / .txt     the same for the official validation set, when the source has one

What is guaranteed:

* The folder is built under a temporary name and renamed into place when complete, so a crash
  leaves no half cache. Disk space for the image arrays is reserved up front, so a full disk is a
  clear error at the start rather than a crash midway.
* A folder that is missing a part, holds an empty, truncated or unreadable part, is of another
  format, or whose files do not match the checksums in meta.json (every small file completely, a
  sample of image rows on every load, the whole image array with ``verify=True``; see
  :mod:`neuralcodes.data.cache_integrity`) is rebuilt, with a log line saying why.
* Every problem of one file (unreadable bytes, undecodable image, wrong size, a name that is not
  UTF-8 or holds a line break) is a :class:`~neuralcodes.data.decode.CorruptImageError` or
  :class:`~neuralcodes.data.decode.ImageSizeError` naming it; with ``skip_corrupt`` the file is left
  out and listed (path and reason) in meta.json and on ``Dataset.skipped``.
* A cache folder that cannot be written is a :class:`CacheError` naming it and ``NEURALCODES_CACHE``.

Decoding runs in a process pool (:mod:`neuralcodes.data.decode_pool`), each worker writing its
slice of the memory-mapped output directly.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from neuralcodes import io
from neuralcodes.data import cache_integrity, decode_pool
from neuralcodes.data.cache_integrity import CacheDamaged
from neuralcodes.data.decode import CorruptImageError
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.data.listing import Source, SplitListing
from neuralcodes.progress import ProgressBar

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CACHE_FORMAT = 2
CHUNK_SIZE = 1000
_HASH_CHUNK = 1 << 20
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# The errno values that mean "this folder cannot take the cache" rather than "this file is bad".
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class CacheError(OSError, ValueError):
    """The cache folder cannot be written (permissions, read-only file system, full disk).

    An ``OSError``, and a ``ValueError`` so that the command line prints its message, not a traceback.
    """


def default_cache_dir() -> Path:
    """``$NEURALCODES_CACHE`` if set, else ``~/.cache/neuralcodes``."""
    env = os.environ.get("NEURALCODES_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neuralcodes"


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """sha256 of a file, remembered in ``cache_dir/checksums.json`` by path, size and mtime.

    Hashing a 220 MB archive takes about a second; a warm load should not pay it again. A memo that
    cannot be written (a read-only cache holding complete caches) only costs that second next time.
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
    try:
        io.write_json(memo_path, memo)
    except OSError as exc:
        log.debug("cannot remember the checksum of %s in %s: %s", path, memo_path, exc)
    return h.hexdigest()


def load_or_build(
    source: Source,
    cache_dir: str | os.PathLike | None = None,
    skip_corrupt: bool = False,
    image_size: int = 64,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    verify: bool = False,
) -> Dataset:
    """The source's decoded images: from its cache folder if complete and intact, else decoded into it first.

    With ``skip_corrupt`` unreadable images are left out and listed in ``meta.json`` and on
    ``Dataset.skipped``; without it the first one raises :class:`CorruptImageError` (also when a cache
    built with skipping is opened without it, so a run never silently uses fewer images than it asked
    for). ``verify`` checks the whole image arrays against their checksums, not only a sample of rows.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    _writing(cache_dir, lambda: cache_dir.mkdir(parents=True, exist_ok=True))
    checksum = source.checksum(cache_dir)
    folder = cache_dir / f"{_safe_name(source.name)}-{checksum[:16]}-{image_size}px"
    if folder.exists():
        try:
            return read_cache(folder, checksum, skip_corrupt, verify)
        except CacheDamaged as exc:
            log.warning("cache %s %s; rebuilding it", folder, exc)
            _writing(cache_dir, lambda: shutil.rmtree(folder))
    _writing(
        cache_dir,
        lambda: build_cache(
            source, folder, checksum, skip_corrupt, image_size, workers, chunk_size
        ),
    )
    try:
        return read_cache(folder, checksum, skip_corrupt)
    except CacheDamaged as exc:  # only if another process replaced the folder with something broken
        raise CacheError(
            f"the cache just built at {folder} cannot be read back ({exc}); delete it and try again"
        )


def open_cache(
    folder: str | os.PathLike,
    checksum: str | None = None,
    skip_corrupt: bool = False,
    verify: bool = False,
) -> Dataset | None:
    """The dataset in a complete, intact cache folder (images memory-mapped), or None if it is missing,
    partial, damaged, of another format or (when ``checksum`` is given) of another source version."""
    try:
        return read_cache(Path(folder), checksum, skip_corrupt, verify)
    except CacheDamaged:
        return None


def read_cache(
    folder: Path, checksum: str | None = None, skip_corrupt: bool = False, verify: bool = False
) -> Dataset:
    """Like :func:`open_cache`, but a folder that cannot be used raises :class:`CacheDamaged` saying why."""
    try:
        meta = io.read_json(folder / "meta.json")
    except (OSError, ValueError) as exc:
        raise CacheDamaged(f"has no readable meta.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CacheDamaged(f"is of format {found}, this version reads format {CACHE_FORMAT}")
    if checksum is not None and meta.get("checksum") != checksum:
        raise CacheDamaged("was decoded from another version of the source")
    try:
        sets = {split: _open_split(folder, split, meta, verify) for split in meta["splits"]}
        skipped = [
            (s["file"], s["error"]) for split in meta["splits"].values() for s in split["skipped"]
        ]
    except CacheDamaged:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises EOFError, ValueError, OSError, ... on damaged files
        raise CacheDamaged(f"has a damaged part ({type(exc).__name__}: {exc})") from None
    if skipped and not skip_corrupt:
        names = [file for file, _ in skipped]
        raise CorruptImageError(
            f"the cache {folder} was built with skip_corrupt=True and leaves out {len(names)} unreadable "
            f"image(s) ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); pass skip_corrupt=True "
            f"(CLI: --skip-corrupt) to use it."
        )
    return Dataset(
        name=meta["name"],
        train=sets["train"],
        val=sets.get("val"),
        checksum=meta["checksum"],
        skipped=skipped,
    )


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
        reports = decode_pool.decode_all(
            source, listing, splits, tmp, skip_corrupt, workers, chunk_size
        )
        split_meta = {
            name: _finish_split(tmp, name, split, reports[name], source)
            for name, split in splits.items()
        }
        seconds = time.perf_counter() - started
        io.write_json(
            tmp / "meta.json",
            {
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
            },
        )
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for note in listing.notes:
        log.info("%s: %s", source.name, note)
    total = sum(m["count"] for m in split_meta.values())
    log.info("decoded %d images of %s in %.1f s into %s", total, source.location, seconds, folder)


def _finish_split(
    tmp: Path,
    name: str,
    split: SplitListing,
    reports: list[decode_pool.ChunkReport],
    source: Source,
) -> dict:
    """Drop skipped rows, write labels and file names; return the split's entry of meta.json."""
    skipped = sorted(s for r in reports for s in r.skipped)
    keep = np.setdiff1d(np.arange(len(split.files)), [s[0] for s in skipped]) if skipped else None
    if keep is not None:
        if len(keep) == 0:
            raise CorruptImageError(
                f"none of the {len(split.files)} {name} images of {source.location} can be decoded"
            )
        _compact(tmp / f"{name}_images.npy", keep)
    labels = np.asarray(split.labels, dtype=np.int64)
    files = split.files
    if keep is not None:
        labels = labels[keep]
        files = [files[i] for i in keep]
    np.save(tmp / f"{name}_labels.npy", labels)
    (tmp / f"{name}_files.txt").write_bytes("".join(f + "\n" for f in files).encode("utf-8"))
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
        "checksums": cache_integrity.record_split(tmp, name),
    }


def _compact(path: Path, keep: np.ndarray) -> None:
    src = np.load(path, mmap_mode="r")
    compact_path = path.with_suffix(".compact.npy")
    dst = np.lib.format.open_memmap(
        compact_path, mode="w+", dtype=np.uint8, shape=(len(keep),) + src.shape[1:]
    )
    for a in range(0, len(keep), 4096):
        dst[a : a + 4096] = src[keep[a : a + 4096]]
    dst.flush()
    del dst, src
    os.replace(compact_path, path)


def _open_split(folder: Path, split: str, meta: dict, verify: bool) -> ImageSet:
    images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
    labels = np.load(folder / f"{split}_labels.npy")
    # split("\n"), not splitlines(): file names may hold other line-breaking characters (\x1c, \u2028).
    files = (folder / f"{split}_files.txt").read_bytes().decode("utf-8").split("\n")[:-1]
    entry = meta["splits"][split]
    count, size = entry["count"], meta["image_size"]
    if images.shape != (count, size, size, 3) or labels.shape != (count,) or len(files) != count:
        raise CacheDamaged(
            f"has {split} parts of the wrong size ({images.shape} images, {labels.shape} labels, "
            f"{len(files)} file names; meta.json says {count} images of {size}x{size})"
        )
    cache_integrity.check_split(folder, split, images, entry["checksums"], full=verify)
    return ImageSet(
        images=images,
        labels=labels,
        class_ids=list(meta["class_ids"]),
        class_names=list(meta["class_names"]),
        files=files,
    )


def _writing(cache_dir: Path, action: Callable[[], _T]) -> _T:
    """``action()``; an OSError saying that ``cache_dir`` cannot take the cache becomes a :class:`CacheError`."""
    try:
        return action()
    except OSError as exc:
        outside = exc.filename is not None and not Path(
            os.fsdecode(exc.filename)
        ).resolve().is_relative_to(cache_dir.resolve())
        if isinstance(exc, CacheError) or exc.errno not in _UNWRITABLE or outside:
            raise
        raise CacheError(
            f"cannot write the decoded-image cache in {cache_dir}: {exc.strerror}"
            f"{f' ({exc.filename})' if exc.filename else ''}. Make that folder writable or free space there, "
            f"or set NEURALCODES_CACHE (library: cache_dir=) to another folder."
        ) from None


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


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
