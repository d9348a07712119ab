"""An open index: search it with images, files or codes; look up, read, add and remove its images.

index = Index.open("photos.idx")
results = index.search(["query.jpg"], k=10)
results.ids, results.distances          # (Q, k) int64 and float32 (-1 / inf past the collection's end)
results.hits[0][0].path, .label, .distance
index.search(["query.jpg"], k=10, rerank="aqe", shortlist=100)   # re-ranked (see :mod:`.reranked`)

Adds, removes and backend changes that other processes commit are seen by the next call (:mod:`.snapshot`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from neuralcodes.index.backends import Backend
from neuralcodes.index.collection import FOLDER, Collection, Skipped, open_collection
from neuralcodes.index.ingest import add_images
from neuralcodes.index.job import IngestSummary
from neuralcodes.index.models import Embedder, ModelRef
from neuralcodes.index.queries import Query, query_codes, query_pixels
from neuralcodes.index.reranked import check_rerank
from neuralcodes.index.snapshot import Snapshot, change_key, load_snapshot
from neuralcodes.index.store import VERSION, ImageRow, IndexDamagedError, Store

# Searches of a fresh snapshot when another process removed a hit before its record was read.
_SEARCH_ATTEMPTS = 5


@dataclass(frozen=True)
class Hit:
    """One image of the index (with its distance to a query, in search results)."""

    id: int
    path: str
    label: str | None
    width: int
    height: int
    sha256: str
    added: str
    source: str  # the folder (or data source) the path is relative to
    distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResults:
    """What :meth:`Index.search` returns for Q queries and ``k`` (clamped to the images indexed).

    Re-ranked (``rerank``), the order is the step's and ``distances`` are still the true Euclidean code
    distances, so they need not be increasing along a row.
    """

    ids: (
        np.ndarray
    )  # (Q, k) int64, nearest first (or in the re-ranked order); -1 where there are fewer images
    distances: np.ndarray  # (Q, k) float32 Euclidean distances between codes; inf where ids is -1
    hits: list[list[Hit]]  # per query, the images found (without the -1 padding)
    rerank: str | None = None  # the re-ranking step used, if any
    shortlist: int | None = (
        None  # how many nearest images it re-ordered (max(k, shortlist), clamped)
    )


class Index:
    """An index folder opened for searching (and updating); see :mod:`neuralcodes.index`."""

    def __init__(self, store: Store, device: str | None = None) -> None:
        self.store = store
        self.device = device
        self.model = ModelRef.from_dict(store.meta.model)
        self._lock = threading.RLock()
        self._embedder: Embedder | None = None
        self._collections: dict[int, Collection] = {}
        self._snapshot: Snapshot | None = None
        self._last: Snapshot | None = None  # the one a reload replaces (its backend is reused)
        self._current()

    @classmethod
    def open(cls, path: str | os.PathLike, device: str | None = None) -> "Index":
        """Open and verify an index folder (the model is loaded on the first image query)."""
        store = Store.open(path)
        try:
            return cls(store, device)
        except BaseException:  # a damaged backend file: do not leave the database open
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self._current().count

    # Another process may add, remove or switch the backend while this index is open (a server):
    # every call reads them from the current snapshot (see :mod:`.snapshot`).
    @property
    def codes(self) -> np.ndarray:
        """(rows, dim) the committed codes, memory-mapped; rows of removed images stay (see ``live``)."""
        with self._lock:
            return self._current().codes

    @property
    def live(self) -> np.ndarray:
        """bool (rows,): True where the image is still in the index."""
        with self._lock:
            return self._current().live

    @property
    def backend(self) -> Backend:
        with self._lock:
            return self._current().backend

    def _current(self) -> Snapshot:
        """Under the lock: the snapshot, loaded again first when a commit (of any process) moved the key."""
        snapshot = self._snapshot
        if snapshot is None or change_key(self.store) != snapshot.key:
            # None while loading: a load that fails is tried again by the next call, never half used.
            self._snapshot = None
            self._snapshot = self._last = load_snapshot(self.store, self._last)
        return self._snapshot

    # --- searching ---------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The model of the index, loaded once (and checked to be the one that built it)."""
        return self.load_model()

    def load_model(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder(self.model, self.device)
            return self._embedder

    def embed(self, queries: Query | Sequence[Query]) -> np.ndarray:
        """Codes (Q, dim) of image files, image bytes, PIL images, uint8 (H, W, 3) arrays, or codes themselves."""
        if isinstance(queries, np.ndarray) and np.issubdtype(queries.dtype, np.floating):
            return query_codes(queries, self.store.meta.dim)
        if isinstance(queries, np.ndarray) and queries.ndim == 4:
            queries = list(queries)
        elif not isinstance(queries, (list, tuple)):
            queries = [queries]
        if not queries:
            raise ValueError("no queries given")
        pixels = np.stack(
            [self.query_pixels(q) for q in queries]
        )  # a bad image is refused before the model loads
        codes = self.embedder.embed(pixels)
        if codes.shape[1] != self.store.meta.dim:
            raise IndexDamagedError(
                f"the model {self.model.describe()} gives {codes.shape[1]}-dimensional codes but {self.store.root} "
                f"holds {self.store.meta.dim}-dimensional ones: the model changed since the build; rebuild the index"
            )
        return codes

    def query_pixels(self, query: Query) -> np.ndarray:
        """uint8 (S, S, 3): a query image prepared exactly as the collection's images were;
        :class:`~neuralcodes.index.queries.BadQueryImage` when it does not decode."""
        return query_pixels(query, self.model.image_size)

    def search(
        self,
        queries: Query | Sequence[Query],
        k: int = 10,
        rerank: str | None = None,
        shortlist: int = 100,
        rerank_params: dict[str, Any] | None = None,
    ) -> SearchResults:
        """The ``k`` nearest images of each query (files, bytes, PIL images, uint8 arrays, or codes).

        ``rerank``: a step of :data:`~neuralcodes.retrieval.rerank.RERANKERS` (``rerank_params`` update its
        defaults) re-orders each query's ``max(k, shortlist)`` nearest images among themselves, and the first
        ``k`` of its order are returned; their distances stay the Euclidean ones, so they need not increase.
        """
        check_rerank(rerank, shortlist, rerank_params)  # before the model loads
        return self.search_codes(self.embed(queries), k, rerank, shortlist, rerank_params)

    def search_ids(
        self,
        ids: Iterable[int],
        k: int = 10,
        rerank: str | None = None,
        shortlist: int = 100,
        rerank_params: dict[str, Any] | None = None,
    ) -> SearchResults:
        """Search with images of the index itself (each finds itself first, unless re-ranked; see :meth:`search`)."""
        check_rerank(rerank, shortlist, rerank_params)
        ids = np.asarray(list(ids), dtype=np.int64)
        with self._lock:
            snapshot = self._current()
            for i in ids.tolist():
                if not snapshot.has(i):  # unknown, or removed (its code row stays in the file)
                    raise KeyError(f"no image with id {i} in this index")
            # Codes are never rewritten: these stay the images' codes whatever commits meanwhile.
            queries = np.asarray(snapshot.codes[ids], dtype=np.float32)
        return self.search_codes(queries, k, rerank, shortlist, rerank_params)

    def search_codes(
        self,
        codes: np.ndarray,
        k: int = 10,
        rerank: str | None = None,
        shortlist: int = 100,
        rerank_params: dict[str, Any] | None = None,
    ) -> SearchResults:
        """Search with (Q, dim) or (dim,) codes of this index's model (finite; L2-normalised like the index's);
        ``rerank``, ``shortlist``, ``rerank_params``: see :meth:`search`."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_rerank(rerank, shortlist, rerank_params)
        codes = self.embed(np.asarray(codes, dtype=np.float32))
        if not np.isfinite(codes).all():
            raise ValueError("query codes contain NaN or inf")
        with self._lock:
            for _ in range(_SEARCH_ATTEMPTS):
                snapshot = self._current()
                ids, distances, n = snapshot.search(codes, k, rerank, shortlist, rerank_params)
                found = set(ids[ids >= 0].tolist())
                records = self.records(sorted(found))
                if len(records) == len(found):
                    break
                # Another process removed a hit after the snapshot was taken: search the new one.
            else:
                raise RuntimeError(
                    f"{self.store.root} changed during each of {_SEARCH_ATTEMPTS} tries of this search "
                    "(images being removed); try again"
                )
        hits = [
            [
                Hit(**{**asdict(records[i]), "distance": float(d)})
                for i, d in zip(row, dist)
                if i >= 0
            ]
            for row, dist in zip(ids.tolist(), distances)
        ]
        return SearchResults(ids, distances, hits, rerank, None if rerank is None else n)

    # --- the images ---------------------------------------------------------------------------------

    def record(self, image_id: int) -> Hit:
        """The metadata of one image; ``KeyError`` naming the id if the index has no such image."""
        found = self.records([image_id])
        if image_id not in found:
            raise KeyError(f"no image with id {image_id} in this index")
        return found[image_id]

    def records(self, ids: Sequence[int]) -> dict[int, Hit]:
        """The metadata of the images among ``ids``, by id (unknown ids are left out)."""
        with self._lock:
            rows = self.store.records(ids)
        return {r.id: _hit(r) for r in rows}

    def find_bytes(self, data: bytes) -> Hit | None:
        """The indexed image whose file has exactly these bytes (by sha256), if any."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            row = self.store.find_sha256(sha)
        return None if row is None else _hit(row)

    def browse(self, offset: int = 0, limit: int = 50) -> list[Hit]:
        """Images in id order, a page at a time."""
        with self._lock:
            rows = self.store.browse(offset, limit)
        return [_hit(r) for r in rows]

    def read_image(self, image_id: int) -> bytes:
        """The bytes of an indexed image, found by id only (no caller-given path reaches the file system)."""
        with self._lock:
            row = self.store.image_file(image_id)
            if row is None:
                raise KeyError(f"no image with id {image_id} in this index")
            path, source, kind, location = row
            if source not in self._collections:
                try:
                    self._collections[source] = open_collection(kind, location)
                except (
                    NotADirectoryError
                ):  # the whole folder moved or was deleted: like a missing file
                    raise FileNotFoundError(
                        f"image {image_id} ({path}): its folder {location} no longer exists "
                        "(moved or deleted since it was indexed)"
                    ) from None
            collection = self._collections[source]
        try:
            return collection.read(path)
        except (OSError, Skipped) as exc:
            raise FileNotFoundError(
                f"image {image_id} ({path}) cannot be read from {location}: {exc}"
            ) from None

    def info(self) -> dict[str, Any]:
        with self._lock:
            self._current()  # meta.json read again if another process switched the backend
            return self._info()

    def _info(self) -> dict[str, Any]:
        store = self.store
        sources = [f"{kind} {location}" for kind, location in store.sources()]
        skipped = store.skipped_counts()
        backend = store.meta.backend
        return {
            "path": str(store.root.resolve()),
            "format_version": VERSION,
            "images": store.live,
            "removed": store.rows - store.live,
            "skipped": skipped,
            "sources": sources,
            "model": self.model.describe(),
            "layer": self.model.layer,
            "dim": store.meta.dim,
            "dtype": store.meta.dtype,
            "backend": backend.get("name"),
            "backend_requested": backend.get("requested"),
            "backend_params": backend.get("params", {}),
            "size_bytes": store.size_on_disk(),
            "created": store.meta.created,
        }

    # --- updating ---------------------------------------------------------------------------------------

    def add(
        self, images: str | os.PathLike | None = None, data: str | None = None, **options: Any
    ) -> IngestSummary:
        """Add a folder's (or data source's) images; see :func:`~neuralcodes.index.ingest.add_images`."""
        with self._lock:
            summary = add_images(
                self.store.root, images=images, data=data, device=self.device, **options
            )
            self._reopen()
        return summary

    def remove(self, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[int]:
        """Remove images by file path (or by their path as search shows it); all or none. Returns their ids."""
        if isinstance(paths, (str, os.PathLike)):  # one path, not a sequence of its characters
            paths = [paths]
        with self._lock:
            ids, missing = [], []
            for path in paths:
                found = self._find(path)
                (ids.append(found) if found is not None else missing.append(str(path)))
            if missing:
                raise ValueError(
                    f"not in the index {self.store.root}: {', '.join(missing)}; give each file's path, or its "
                    "path as `neuralcodes search` shows it (nothing was removed)"
                )
            ids = sorted(set(ids))
            with self.store.lock():
                self.store.remove_images(
                    ids
                )  # moves the generation: the next call reloads the mask
        return ids

    def _find(self, path: str | os.PathLike) -> int | None:
        target = Path(path).expanduser().resolve()
        for source, location in self.store.sources_of_kind(FOLDER):
            if target.is_relative_to(location):
                found = self.store.image_id(source, target.relative_to(location).as_posix())
                if found is not None:
                    return found
        ids = self.store.ids_with_path(Path(path).as_posix())
        if len(ids) > 1:
            raise ValueError(
                f"{path} names {len(ids)} images (one per source folder); give the file's full path"
            )
        return ids[0] if ids else None

    def _reopen(self) -> None:
        root = self.store.root
        self.store.close()
        self.store = Store.open(root)
        self._snapshot = self._last = None  # a new store: checked as when opened
        self._current()


def _hit(row: ImageRow) -> Hit:
    return Hit(
        row.id, row.path, row.label, row.width, row.height, row.sha256, row.added, row.location
    )
