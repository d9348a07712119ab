"""A shard's files.sqlite (format in :mod:`neuralcodes.index.shards`): its statements, behind :class:`ShardFiles`.

Each write commits on its own: a shard's start records its non-image files with ``done`` = 0, and each
batch records its files with the new ``done`` in one transaction, after its codes are flushed.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable, NamedTuple

SHARD_FILES = "files.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    position INTEGER PRIMARY KEY, path TEXT NOT NULL, label TEXT, sha256 TEXT, width INTEGER, height INTEGER,
    kind TEXT, reason TEXT, added TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS others (path TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ShardFile(NamedTuple):
    """One file of a shard's slice: decoded (``sha256`` and size set) or skipped (``kind`` and ``reason`` set)."""

    position: int  # in the whole sorted file list
    path: str
    label: str | None
    sha256: str | None
    width: int | None
    height: int | None
    kind: str | None
    reason: str | None
    added: str


class ShardFilesUnreadable(ValueError):
    """files.sqlite cannot be read (the message is SQLite's)."""


def committed_files(folder: Path) -> int:
    """How many files of the shard in ``folder`` are committed, read without creating anything;
    :class:`ShardFilesUnreadable` (or ``TypeError``, no count recorded) when the file is damaged."""
    try:
        with closing(sqlite3.connect(folder / SHARD_FILES)) as db:
            return int(db.execute("SELECT value FROM state WHERE key = 'done'").fetchone()[0])
    except sqlite3.Error as exc:
        raise ShardFilesUnreadable(str(exc)) from None


class ShardFiles:
    """A shard's records, opened (and created when new) in ``folder``; close it after use."""

    def __init__(self, folder: Path) -> None:
        self.db = sqlite3.connect(folder / SHARD_FILES)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ShardFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, others: Iterable[tuple[str, str, str]]) -> None:
        """Record the collection's non-image files (path, kind, reason) and no file done, in one transaction."""
        with self.db:
            self.db.executemany("INSERT INTO others VALUES (?, ?, ?)", others)
            self.db.execute("INSERT OR REPLACE INTO state VALUES ('done', '0')")

    def done(self) -> int:
        """Files of the slice committed so far."""
        return int(self.db.execute("SELECT value FROM state WHERE key = 'done'").fetchone()[0])

    def commit_batch(self, files: Iterable[ShardFile], done: int) -> None:
        """A batch's files and the new count of files done, in one transaction (its codes are on disk already)."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", files
            )
            self.db.execute("UPDATE state SET value = ? WHERE key = 'done'", (str(done),))

    def others(self) -> list[tuple[str, str, str]]:
        """The collection's non-image files (path, kind, reason), in the order they were listed."""
        return self.db.execute("SELECT path, kind, reason FROM others ORDER BY rowid").fetchall()

    def files(self) -> list[ShardFile]:
        """Every committed file of the slice, by position."""
        rows = self.db.execute(
            "SELECT position, path, label, sha256, width, height, kind, reason, added "
            "FROM files ORDER BY position"
        )
        return list(map(ShardFile._make, rows))
