"""The index folder: meta.json, the codes file, the checks that its parts agree, and the writer's lock
(the database's statements are :class:`~.database.Database`'s, which a :class:`Store` is).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from neuralcodes import io
from neuralcodes.index.store.database import Database, connect

FORMAT = "neuralcodes-index"
VERSION = 1
DTYPES = ("float32", "float16")

META, CODES, DATABASE, REPORT, LOCK = (
    "meta.json",
    "codes.bin",
    "metadata.sqlite",
    "report.csv",
    ".lock",
)
SHARDS = "shards"  # the parts of a sharded build until they are merged (see :mod:`neuralcodes.index.shards`)


class IndexDamagedError(ValueError):
    """The parts of an index folder disagree (counts, dimension, version, model); the message names the part."""


@dataclass(frozen=True)
class Meta:
    """meta.json: what the codes are and how they were made."""

    dim: int
    dtype: str
    model: dict[str, Any]
    backend: dict[str, Any]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "dtype": self.dtype,
            "model": self.model,
            "backend": self.backend,
            "created": self.created,
        }


class Store(Database):
    """One open index folder: meta, the SQLite database (its queries are :class:`Database`'s) and the codes file."""

    def __init__(self, root: Path, meta: Meta, db: sqlite3.Connection) -> None:
        super().__init__(db)
        self.root = root
        self.meta = meta
        # The database file this connection reads: a folder rebuilt in place has another (see replaced()).
        self._database_file = _file_id(root / DATABASE)

    # --- creating and opening ------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike, meta: Meta) -> "Store":
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(
                f"{root} exists and is not empty; choose a new index folder (or `neuralcodes index add` to extend it)"
            )
        if meta.dtype not in DTYPES:
            raise ValueError(f"codes dtype must be one of {', '.join(DTYPES)}, got {meta.dtype!r}")
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, meta, connect(root / DATABASE))
        store.create_tables()
        (root / CODES).touch()
        # meta.json last: a folder without it is not an index yet, so a crash here leaves no half-index.
        io.write_json(root / META, meta.to_dict())
        return store

    @classmethod
    def open(cls, root: str | os.PathLike, allow_job: bool = False) -> "Store":
        """Open and check the folder; ``allow_job``: an unfinished build/add is expected (resuming it)."""
        root = Path(root)
        if not (root / META).is_file() and (root / SHARDS).is_dir():
            raise FileNotFoundError(
                f"{root} is a sharded build whose shards are not merged yet: finish every shard (run each "
                f"`neuralcodes index build {root} ... --shard K/N` again) or see `neuralcodes index merge {root}`"
            )
        if not (root / META).is_file():
            raise FileNotFoundError(
                f"{root} is not a neuralcodes index (no {META}); create one with `neuralcodes index build`"
            )
        meta = _read_meta(root / META)
        if not (root / DATABASE).is_file():
            raise IndexDamagedError(
                f"{root / DATABASE} is missing: the index is incomplete; rebuild it"
            )
        try:
            db = connect(root / DATABASE, existing=True)
        except sqlite3.DatabaseError as exc:
            raise IndexDamagedError(
                f"{root / DATABASE} is not a readable SQLite database ({exc}); rebuild the index"
            ) from None
        store = cls(root, meta, db)
        store.check(allow_job)
        return store

    def close(self) -> None:
        self.db.close()

    # --- consistency ---------------------------------------------------------------------------

    def check(self, allow_job: bool = False) -> None:
        """Raise :class:`IndexDamagedError` naming the part that disagrees with the others."""
        job = self.job()
        if job is not None and not allow_job:
            raise IndexDamagedError(
                f"{self.root} holds an unfinished `index {job['op']}` ({self.state('job_done')} of {job['total']} "
                f"files done): run the same `neuralcodes index {job['op']}` command again to finish it"
            )
        rows, live = self.rows, self.live
        count, top = self.image_count_and_top_id()
        if count != live:
            raise IndexDamagedError(
                f"{self.root / DATABASE}: the images table holds {count} rows but the index recorded {live}; "
                "the database was changed outside neuralcodes or is damaged: rebuild the index"
            )
        if top is not None and top >= rows:
            raise IndexDamagedError(
                f"{self.root / DATABASE}: image id {top} has no code (only {rows} rows were committed); rebuild the index"
            )
        size = (self.root / CODES).stat().st_size if (self.root / CODES).exists() else -1
        expected = rows * self.row_bytes
        if size < expected or (size != expected and job is None):
            have = max(size, 0) / self.row_bytes
            raise IndexDamagedError(
                f"{self.root / CODES} holds {max(size, 0):,} bytes ({have:,.2f} rows of {self.meta.dim} "
                f"{self.meta.dtype}) but {DATABASE} records {rows:,} rows: the codes file is truncated or damaged; "
                "rebuild the index with `neuralcodes index build`"
            )

    # --- the writer -----------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer: a second process writing the same index would interleave its batches."""
        import fcntl

        with open(self.root / LOCK, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FileExistsError(
                    f"another neuralcodes process is writing {self.root}; wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- codes ---------------------------------------------------------------------------------

    @property
    def row_bytes(self) -> int:
        return self.meta.dim * np.dtype(self.meta.dtype).itemsize

    def codes(self, rows: int | None = None) -> np.ndarray:
        """The committed codes, (rows, dim), memory-mapped read-only (an empty array when there are none);
        ``rows``: the first rows only (a count read with the rest of a snapshot; see :mod:`..snapshot`)."""
        rows = self.rows if rows is None else rows
        if rows == 0:
            return np.zeros((0, self.meta.dim), dtype=self.meta.dtype)
        return np.memmap(
            self.root / CODES, dtype=self.meta.dtype, mode="r", shape=(rows, self.meta.dim)
        )

    def truncate_uncommitted(self) -> None:
        """Cut codes.bin back to the committed rows (bytes a killed batch left behind)."""
        with open(self.root / CODES, "r+b") as f:
            f.truncate(self.rows * self.row_bytes)

    def append_codes(self, codes: np.ndarray) -> None:
        """Write ``codes`` after the committed rows and fsync; they count once the caller commits."""
        codes = np.ascontiguousarray(codes, dtype=self.meta.dtype)
        if codes.ndim != 2 or codes.shape[1] != self.meta.dim:
            raise ValueError(f"codes must be (n, {self.meta.dim}), got {codes.shape}")
        with open(self.root / CODES, "r+b") as f:
            f.seek(self.rows * self.row_bytes)
            f.write(codes.tobytes())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())

    def live_mask(self) -> np.ndarray:
        """bool (rows,): True where the image still is in the index."""
        mask = np.zeros(self.rows, dtype=bool)
        mask[self.image_ids()] = True
        return mask

    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def set_backend(self, backend: dict[str, Any]) -> None:
        """Name the backend in meta.json (its FAISS file is saved already), then move the generation, so
        an open Index that sees the new generation reads the new meta.json and finds its file."""
        self.meta = Meta(
            self.meta.dim, self.meta.dtype, self.meta.model, backend, self.meta.created
        )
        io.write_json(self.root / META, self.meta.to_dict())
        with self.db:
            self.bump_generation()

    def reread_meta(self) -> Meta:
        """meta.json as another process may have rewritten it (a backend change)."""
        self.meta = _read_meta(self.root / META)
        return self.meta

    def meta_stamp(self) -> tuple[int, int, int] | None:
        """meta.json's inode, mtime and size (None if missing): a rewrite (atomic, a new inode) changes it."""
        try:
            st = (self.root / META).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def replaced(self) -> bool:
        """Whether metadata.sqlite is no longer the file this store opened: the folder was deleted and
        rebuilt (or restored) while open, so what this connection reads is not the index any more."""
        return _file_id(self.root / DATABASE) != self._database_file

    def write_report(self) -> Path:
        """report.csv: every skipped or duplicate file with its reason (atomic)."""
        import csv
        import io as _io

        buffer = _io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["job", "source", "path", "kind", "reason"])
        writer.writerows(self.skipped_files())
        io.write_text(self.root / REPORT, buffer.getvalue())
        return self.root / REPORT


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def faiss_path(root: Path, backend: str) -> Path:
    return root / f"faiss-{backend}.index"


def _read_meta(path: Path) -> Meta:
    try:
        raw = io.read_json(path)
    except (OSError, ValueError) as exc:
        raise IndexDamagedError(
            f"{path} cannot be read ({exc}); the index is damaged: rebuild it"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise IndexDamagedError(
            f"{path} is not the meta file of a neuralcodes index (format {FORMAT!r} expected)"
        )
    if raw.get("version") != VERSION:
        raise IndexDamagedError(
            f"{path}: index format version {raw.get('version')!r}, but this neuralcodes reads version {VERSION}; "
            "rebuild the index with this version (or use the neuralcodes that wrote it)"
        )
    dim, dtype = raw.get("dim"), raw.get("dtype")
    if (
        not isinstance(dim, int)
        or dim < 1
        or dtype not in DTYPES
        or not isinstance(raw.get("model"), dict)
    ):
        raise IndexDamagedError(
            f"{path}: dim, dtype or model is missing or invalid; the index is damaged: rebuild it"
        )
    return Meta(
        dim, dtype, raw["model"], raw.get("backend") or {"name": "exact"}, raw.get("created", "")
    )
