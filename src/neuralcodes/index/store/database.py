"""metadata.sqlite: every statement on an index's database, behind a named method of :class:`Database`.

A method that writes either commits on its own, because it is one whole change (:meth:`Database.remove_images`,
:meth:`Database.end_job`), or says "in the caller's transaction": a batch's images, skipped files and counts
must commit together or not at all, so the caller opens :meth:`Database.transaction` around them, exactly
where the commit point of the format (:mod:`neuralcodes.index.store`) falls.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, location TEXT NOT NULL, UNIQUE (kind, location));
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, source INTEGER NOT NULL REFERENCES sources(id), path TEXT NOT NULL, label TEXT,
    width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT NOT NULL UNIQUE, added TEXT NOT NULL,
    UNIQUE (source, path));
CREATE TABLE IF NOT EXISTS skipped (
    job INTEGER NOT NULL, source INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_files (
    position INTEGER PRIMARY KEY, path TEXT NOT NULL, label TEXT);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_IMAGES = (
    "SELECT i.id, i.path, i.label, i.width, i.height, i.sha256, i.added, s.kind, s.location "
    "FROM images i JOIN sources s ON s.id = i.source"
)
_MAX_PARAMETERS = 500  # SQLite caps the parameters of one statement


class ImageRow(NamedTuple):
    """One indexed image as the database records it, with the source its path is relative to."""

    id: int
    path: str
    label: str | None
    width: int
    height: int
    sha256: str
    added: str
    source_kind: str
    location: str


class NewImage(NamedTuple):
    """An image to insert: its id is its row in codes.bin."""

    id: int
    source: int
    path: str
    label: str | None
    width: int
    height: int
    sha256: str
    added: str


class ImageFile(NamedTuple):
    """Where an indexed image's file is: ``path`` inside the source ``source`` (of ``kind`` at ``location``)."""

    path: str
    source: int
    kind: str
    location: str


def connect(path: Path, existing: bool = False) -> sqlite3.Connection:
    """Open the database; ``existing``: read it once, so a file that is no database fails here
    (``sqlite3.DatabaseError``) rather than on the first query."""
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA foreign_keys = ON")
    if existing:
        try:
            db.execute("SELECT count(*) FROM images").fetchone()
        except BaseException:
            db.close()
            raise
    return db


class Database:
    """The queries of an index's metadata.sqlite (a :class:`~neuralcodes.index.store.Store` is one)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def create_tables(self) -> None:
        """The empty tables and counts of a new index, in one transaction."""
        with self.db:
            self.db.executescript(SCHEMA)
            self.db.executemany(
                "INSERT INTO state VALUES (?, ?)", [("rows", "0"), ("live", "0"), ("jobs", "0")]
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Everything inside commits together when the block ends, or not at all if it raises."""
        with self.db:
            yield self.db

    # --- state -----------------------------------------------------------------------------------

    def state(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_state(self, key: str, value: Any) -> None:
        """In the caller's transaction."""
        self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, str(value)))

    @property
    def rows(self) -> int:
        """Code rows committed (removed images keep theirs)."""
        return int(self.state("rows", "0"))

    @property
    def live(self) -> int:
        """Images in the index."""
        return int(self.state("live", "0"))

    @property
    def generation(self) -> int:
        """Moves with every committed change of the images or the backend (an open Index reloads on it)."""
        return int(self.state("generation", "0"))

    def bump_generation(self) -> None:
        """In the caller's transaction: the same one that commits the change, so a reader that sees the
        new generation sees the change, and one that sees the change sees the new generation."""
        self.set_state("generation", self.generation + 1)

    def change_counts(self) -> tuple[int, int, int]:
        """(generation, rows, live) in one statement: what an open Index compares, cheaply, per request.
        The counts are in it too, so a writer that predates the generation (or forgets it) is still seen."""
        state = dict(
            self.db.execute(
                "SELECT key, value FROM state WHERE key IN ('generation', 'rows', 'live')"
            )
        )
        return tuple(int(state.get(key, "0")) for key in ("generation", "rows", "live"))  # type: ignore[return-value]

    def committed_state(self) -> tuple[int, np.ndarray]:
        """(committed rows, ids of every image) read in one transaction, so both are of the same commit:
        the ids never name a row past the count, and no removed image is among them."""
        if (
            self.db.in_transaction
        ):  # BEGIN would fail; the caller's transaction is one commit's view anyway
            return self.rows, self.image_ids()
        self.db.execute("BEGIN")
        try:
            return self.rows, self.image_ids()
        finally:
            self.db.commit()  # a read-only transaction: this only releases the shared lock

    def job(self) -> dict[str, Any] | None:
        """The unfinished build or add, if any."""
        value = self.state("job")
        return None if value is None else json.loads(value)

    # --- reading images --------------------------------------------------------------------------

    def image_count_and_top_id(self) -> tuple[int, int | None]:
        """How many images there are, and the largest id (None when there are none)."""
        count, top = self.db.execute("SELECT count(*), max(id) FROM images").fetchone()
        return count, top

    def image_ids(self) -> np.ndarray:
        """int64 ids of every image in the index."""
        return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM images")), dtype=np.int64)

    def records(self, ids: Sequence[int]) -> list[ImageRow]:
        """The images among ``ids`` (unknown ids are left out), in no particular order."""
        ids = [int(i) for i in ids]
        rows: list[ImageRow] = []
        for start in range(0, len(ids), _MAX_PARAMETERS):
            part = ids[start : start + _MAX_PARAMETERS]
            found = self.db.execute(f"{_IMAGES} WHERE i.id IN ({','.join('?' * len(part))})", part)
            rows += map(ImageRow._make, found)
        return rows

    def find_sha256(self, sha256: str) -> ImageRow | None:
        """The image whose file has this content (sha256 is unique in an index)."""
        row = self.db.execute(f"{_IMAGES} WHERE i.sha256 = ?", (sha256,)).fetchone()
        return None if row is None else ImageRow._make(row)

    def browse(self, offset: int, limit: int) -> list[ImageRow]:
        """Images in id order: ``limit`` of them after the first ``offset``."""
        rows = self.db.execute(
            f"{_IMAGES} ORDER BY i.id LIMIT ? OFFSET ?", (max(0, int(limit)), max(0, int(offset)))
        )
        return list(map(ImageRow._make, rows))

    def image_file(self, image_id: int) -> ImageFile | None:
        """Where an image's file is, or None for an unknown id."""
        row = self.db.execute(
            "SELECT i.path, s.id, s.kind, s.location FROM images i JOIN sources s ON s.id = i.source "
            "WHERE i.id = ?",
            (int(image_id),),
        ).fetchone()
        return None if row is None else ImageFile._make(row)

    def has_image(self, source: int, path: str) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM images WHERE source = ? AND path = ?", (source, path)
            ).fetchone()
            is not None
        )

    def image_id(self, source: int, path: str) -> int | None:
        """The id of the image at ``path`` in ``source``, if it is indexed."""
        row = self.db.execute(
            "SELECT id FROM images WHERE source = ? AND path = ?", (source, path)
        ).fetchone()
        return row[0] if row else None

    def ids_with_path(self, path: str) -> list[int]:
        """Ids of the images at ``path`` inside any source (one per source at most)."""
        return [r[0] for r in self.db.execute("SELECT id FROM images WHERE path = ?", (path,))]

    # --- sources and skipped files ---------------------------------------------------------------

    def sources(self) -> list[tuple[str, str]]:
        """(kind, location) of every source, in the order they were first indexed."""
        return self.db.execute("SELECT kind, location FROM sources").fetchall()

    def sources_of_kind(self, kind: str) -> list[tuple[int, str]]:
        """(id, location) of the sources of one kind."""
        return self.db.execute(
            "SELECT id, location FROM sources WHERE kind = ?", (kind,)
        ).fetchall()

    def source_location(self, source: int) -> str | None:
        row = self.db.execute("SELECT location FROM sources WHERE id = ?", (source,)).fetchone()
        return row[0] if row else None

    def source_id(self, kind: str, location: str) -> int:
        """The id of a source, recorded first if it is new; in the caller's transaction."""
        self.db.execute(
            "INSERT OR IGNORE INTO sources (kind, location) VALUES (?, ?)", (kind, location)
        )
        return self.db.execute(
            "SELECT id FROM sources WHERE kind = ? AND location = ?", (kind, location)
        ).fetchone()[0]

    def skipped_counts(self, job: int | None = None) -> dict[str, int]:
        """Files not indexed, counted by kind (of one job, or of all)."""
        if job is None:
            return dict(self.db.execute("SELECT kind, count(*) FROM skipped GROUP BY kind"))
        return dict(
            self.db.execute(
                "SELECT kind, count(*) FROM skipped WHERE job = ? GROUP BY kind", (job,)
            )
        )

    def skipped_files(self) -> list[tuple[int, str, str, str, str]]:
        """(job, source location, path, kind, reason) of every file not indexed, in the order they were met."""
        return self.db.execute(
            "SELECT s.job, src.location, s.path, s.kind, s.reason FROM skipped s "
            "JOIN sources src ON src.id = s.source ORDER BY s.rowid"
        ).fetchall()

    # --- writing (each says whether it commits) ----------------------------------------------------

    def insert_images(self, images: Iterable[NewImage]) -> None:
        """In the caller's transaction (with the row count that makes their codes count)."""
        self.db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", images)

    def add_skipped(self, job: int, source: int, files: Iterable[tuple[str, str, str]]) -> None:
        """Files (path, kind, reason) a job did not index; in the caller's transaction."""
        self.db.executemany(
            "INSERT INTO skipped VALUES (?, ?, ?, ?, ?)", [(job, source, *f) for f in files]
        )

    def remove_images(self, ids: Sequence[int]) -> None:
        """Delete the images and lower the live count, in one transaction of its own (their code rows stay)."""
        with self.db:
            self.db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
            self.set_state("live", self.live - len(ids))
            self.bump_generation()

    # --- the file list of a job --------------------------------------------------------------------

    def set_job_files(self, files: Iterable[tuple[str, str | None]]) -> None:
        """The (path, label) list of a starting job, replacing any other; in the caller's transaction."""
        self.db.execute("DELETE FROM job_files")
        self.db.executemany(
            "INSERT INTO job_files VALUES (?, ?, ?)", [(i, *f) for i, f in enumerate(files)]
        )

    def job_files(self) -> list[tuple[str, str | None]]:
        """The job's (path, label) list, in order."""
        return self.db.execute("SELECT path, label FROM job_files ORDER BY position").fetchall()

    def end_job(self, number: int) -> None:
        """Forget the finished job's file list and counters, in one transaction of its own."""
        with self.db:
            self.db.execute("DELETE FROM job_files")
            self.db.execute(
                "DELETE FROM state WHERE key IN ('job', 'job_done', ?)", (f"job{number}_added",)
            )
