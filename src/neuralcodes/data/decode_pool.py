"""Decode a listing's files into memory-mapped uint8 arrays, in a process pool (the cache's workhorse).

Each worker decodes a chunk of files and writes its rows of the output array directly (no pixels are
pickled back). Every problem of one file, whatever the source, is a
:class:`~neuralcodes.data.decode.CorruptImageError` (or a subclass) or an
:class:`~neuralcodes.data.decode.ImageSizeError` naming it; with ``skip_corrupt`` the file is
recorded (row, printable path, reason) in its chunk's report instead and its row left for removal.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralcodes.data.decode import (
    SKIP_ADVICE,
    CorruptImageError,
    DecodedImage,
    ImageSizeError,
    UnreadableFileError,
    decode_image,
    display_name,
)
from neuralcodes.data.listing import Source, SourceListing, SplitListing
from neuralcodes.progress import ProgressBar


def decode_file(source: Source, name: str, size: int, resize: bool) -> DecodedImage:
    """One file of ``source`` as the cache stores it; every problem is an error naming the file."""
    where = source.location
    if display_name(name) != name or "\n" in name:
        what = "is not valid UTF-8" if display_name(name) != name else "holds a line break"
        reason = f"its name {what}; rename the file"
        raise UnreadableFileError(
            f"cannot use {display_name(name)!r} in {where}: {reason}. {SKIP_ADVICE}",
            file=display_name(name),
            reason=reason,
        )
    try:
        data = source.read(name)
    except (
        OSError
    ) as exc:  # sources wrap their own errors; this covers any other Source implementation
        reason = exc.strerror or str(exc)
        raise UnreadableFileError(
            f"cannot read {name} in {where}: {reason}. {SKIP_ADVICE}", file=name, reason=reason
        ) from None
    return decode_image(data, name, size, resize, where=where)


@dataclass
class ChunkReport:
    split: str
    count: int
    modes: Counter = field(default_factory=Counter)
    resized: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)


def decode_chunk(
    source: Source,
    split: str,
    files: list[str],
    start: int,
    out_path: Path,
    size: int,
    resize: bool,
    skip_corrupt: bool,
) -> ChunkReport:
    """Decode ``files`` into rows ``start:`` of the memory-mapped array at ``out_path``."""
    out = np.load(out_path, mmap_mode="r+")
    report = ChunkReport(split, len(files))
    for offset, name in enumerate(files):
        try:
            pixels, mode, original_size = decode_file(source, name, size, resize)
        except (CorruptImageError, ImageSizeError) as exc:
            if not skip_corrupt:
                raise
            report.skipped.append(
                (start + offset, display_name(name), getattr(exc, "reason", str(exc)))
            )
            continue
        out[start + offset] = pixels
        if mode != "RGB":
            report.modes[mode] += 1
        if original_size != (size, size):
            report.resized += 1
    del out  # no msync: the pages are shared with the parent, and forcing them to disk costs ~half the build
    return report


def decode_all(
    source: Source,
    listing: SourceListing,
    splits: dict[str, SplitListing],
    tmp: Path,
    skip_corrupt: bool,
    workers: int | None,
    chunk_size: int,
) -> dict[str, list[ChunkReport]]:
    size = listing.image_size
    tasks = []
    for name, split in splits.items():
        out_path = tmp / f"{name}_images.npy"
        create_array(out_path, (len(split.files), size, size, 3))
        for start in range(0, len(split.files), chunk_size):
            files = split.files[start : start + chunk_size]
            tasks.append((source, name, files, start, out_path, size, listing.resize, skip_corrupt))
    reports: dict[str, list[ChunkReport]] = {name: [] for name in splits}
    workers = min(workers or available_cpus(), len(tasks))
    total = sum(len(s.files) for s in splits.values())
    if workers <= 1:
        with ProgressBar(total, f"decode {source.name}", unit="img") as bar:
            for task in tasks:
                report = decode_chunk(*task)
                reports[report.split].append(report)
                bar.advance(report.count, status=report.split)
        return reports
    # fork: workers need no re-import of the caller's __main__; they only run PIL and numpy.
    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    pool: Executor = ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures: list[Future] = [pool.submit(decode_chunk, *task) for task in tasks]
        with ProgressBar(total, f"decode {source.name} ({workers} workers)", unit="img") as bar:
            for future in as_completed(futures):
                report = future.result()
                reports[report.split].append(report)
                bar.advance(report.count, status=report.split)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return reports


def create_array(path: Path, shape: tuple[int, ...]) -> None:
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape).flush()
    # The file is sparse: a full disk would show only when a worker writes its pages, as a SIGBUS
    # crash. Reserving the space now turns that into an OSError (ENOSPC) before any decoding.
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        with open(path, "r+b") as f:
            try:
                fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
