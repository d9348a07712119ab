"""Checksums of a decoded-image cache folder, so that a damaged or overwritten part is never used.

For each split, ``meta.json`` records the sha256 of every small file (labels, file names, row
checksums), the sha256 of the whole image array, and ``<split>_rows.npy`` holds a CRC-32 of each
image row. :func:`check_split` runs on every load: it hashes the small files completely and checks a
random sample of :data:`SAMPLE_ROWS` image rows (plus the first and the last) against their CRCs, a few
milliseconds for 100,000 images, enough to catch an array overwritten in place or a truncated or
zeroed file. ``full=True`` hashes the whole image array as well (about a second per gigabyte), which
also catches damage confined to a few rows.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

SAMPLE_ROWS = 256
_BLOCK_ROWS = 4096
_SMALL_FILES = ("labels.npy", "files.txt", "rows.npy")


class CacheDamaged(Exception):
    """A cache folder cannot be trusted; ``str()`` says which part and why (for the rebuild's log line)."""


def record_split(folder: Path, split: str) -> dict[str, str]:
    """Write ``<split>_rows.npy`` (CRC-32 per image row) and return the split's checksums for meta.json."""
    images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
    crcs, digest = _row_crcs_and_sha256(images)
    del images
    np.save(folder / f"{split}_rows.npy", crcs)
    sums = {part: _file_sha256(folder / f"{split}_{part}") for part in _SMALL_FILES}
    sums["images"] = digest
    return sums


def check_split(
    folder: Path,
    split: str,
    images: np.ndarray,
    sums: dict,
    full: bool = False,
    sample_rows: int | None = None,
) -> None:
    """Raise :class:`CacheDamaged` unless the split's files match the checksums ``sums`` of meta.json."""
    for part in _SMALL_FILES:
        if _file_sha256(folder / f"{split}_{part}") != sums.get(part):
            raise CacheDamaged(f"{split}_{part} does not match its checksum in meta.json")
    crcs = np.load(folder / f"{split}_rows.npy")
    if crcs.shape != (len(images),):
        raise CacheDamaged(
            f"{split}_rows.npy holds {crcs.shape} checksums for {len(images)} images"
        )
    n = len(images)
    count = SAMPLE_ROWS if sample_rows is None else sample_rows
    rows = (
        np.random.default_rng().choice(n, size=min(n, count), replace=False) if n and count else []
    )
    rows = sorted({*map(int, rows), *([0, n - 1] if n and count else [])})
    bad = [i for i in rows if zlib.crc32(images[i]) != int(crcs[i])]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise CacheDamaged(
            f"{len(bad)} of {len(rows)} sampled rows of {split}_images.npy (rows {shown}) do not match their "
            f"checksums: the array was overwritten or damaged"
        )
    if full and _row_crcs_and_sha256(images)[1] != sums.get("images"):
        raise CacheDamaged(
            f"{split}_images.npy does not match its checksum in meta.json (full verification)"
        )


def _row_crcs_and_sha256(images: np.ndarray) -> tuple[np.ndarray, str]:
    crcs = np.empty(len(images), dtype=np.uint32)
    h = hashlib.sha256()
    for start in range(0, len(images), _BLOCK_ROWS):
        block = np.ascontiguousarray(images[start : start + _BLOCK_ROWS])
        h.update(block)
        for offset, row in enumerate(block):
            crcs[start + offset] = zlib.crc32(row)
    return crcs, h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
