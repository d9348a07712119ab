"""What an open :class:`~neuralcodes.index.Index` searches: one consistent view of the index folder.

Another process may add images (`index add`), remove them (`index remove`) or change the backend
(`index backend`) while a server has the index open. Each of those commits moves the database's
*generation* in the same transaction as the change (:meth:`~.store.Database.bump_generation`), so
the open index compares a cheap key (:func:`change_key`: the generation, the row and image counts,
meta.json's stamp) at the start of each call and, when it moved, loads a new :class:`Snapshot`:

- the codes memory-mapped to the committed row count (rows past it may be half written),
- the live mask and that count read in one SQLite transaction (one commit's view),
- the backend of meta.json: the one in memory, extended in place with the rows added since
  (:meth:`~.backends.Backend.sync`), or its FAISS file loaded when the backend changed.

A search uses one snapshot from start to end, never old codes with new metadata or the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuralcodes.index.backends import Backend, load_backend, new_backend, rank_candidates
from neuralcodes.index.reranked import rerank_results
from neuralcodes.index.store import IndexDamagedError, Store, faiss_path

_ATTEMPTS = 3  # a backend switched again while its file was being read: read meta.json again


@dataclass(frozen=True)
class Snapshot:
    """The codes, live images and backend of one committed state of the index."""

    root: Path
    key: tuple[Any, ...]  # the change key read before anything else (see load_snapshot)
    rows: int  # committed code rows (removed images keep theirs)
    count: int  # images in the index
    codes: np.ndarray  # (rows, dim), memory-mapped
    live: np.ndarray  # bool (rows,): True where the image is still in the index
    backend: Backend  # holds exactly ``rows`` codes

    def has(self, image_id: int) -> bool:
        return 0 <= image_id < self.rows and bool(self.live[image_id])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        rerank: str | None,
        shortlist: int,
        rerank_params: dict[str, Any] | None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, distances, shortlist size) of the (Q, dim) ``queries``, from this snapshot alone."""
        if self.count == 0:
            raise ValueError(f"{self.root} holds no images; add some with `neuralcodes index add`")
        k = min(int(k), self.count)
        n = k if rerank is None else min(max(k, int(shortlist)), self.count)
        # Removed rows are still in the backend: ask for that many more, rank_candidates drops them.
        candidates = self.backend.candidates(self.codes, queries, n + self.rows - self.count)
        ids, distances = rank_candidates(self.codes, queries, candidates, self.live, n)
        if rerank is not None:
            ids, distances = rerank_results(
                rerank, queries, ids, distances, self.codes, k, rerank_params
            )
        return ids, distances, n


def change_key(store: Store) -> tuple[Any, ...]:
    """What moves whenever another process commits a change to the index (a query and a stat)."""
    return (*store.change_counts(), store.meta_stamp())


def load_snapshot(store: Store, previous: Snapshot | None) -> Snapshot:
    """The index as committed now; ``previous``: the snapshot it replaces (its backend is reused and
    extended when meta.json still names it), None when the index is opened (a stale FAISS file is then
    damage, named; later it may be a job's batches committed before the job's backend is finished)."""
    if store.replaced():
        raise IndexDamagedError(
            f"{store.root} was deleted and built again (or restored) while it was open: "
            "restart the server (or open the index again) to search the new one"
        )
    # The key first: a change committed while this loads moves it, so the next call loads again.
    key = change_key(store)
    backend = _backend(store, previous)
    # After the backend: its FAISS file is saved only once its rows are committed, so rows >= its codes.
    rows, ids = store.committed_state()
    codes = store.codes(rows)
    path = faiss_path(store.root, backend.name)
    if previous is None:
        backend.check(rows, store.meta.dim, path)
    elif not backend.extendable(rows):
        # An older version's inner-product file: built anew here, as finish_backend does on disk.
        backend = new_backend(backend.name, backend.params)
    backend.sync(codes)
    backend.check(rows, store.meta.dim, path)
    live = np.zeros(rows, dtype=bool)
    live[ids] = True
    return Snapshot(store.root, key, rows, len(ids), codes, live, backend)


def _backend(store: Store, previous: Snapshot | None) -> Backend:
    """The backend meta.json names: ``previous``'s if it is the same, else read from its file."""
    for attempt in range(_ATTEMPTS):
        stamp = store.meta_stamp()
        backend = store.reread_meta().backend
        name, params = backend.get("name") or "exact", backend.get("params") or {}
        old = None if previous is None else previous.backend
        if old is not None and (old.name, old.params) == (name, params):
            return old  # extended in place by load_snapshot
        try:
            return load_backend(name, params, faiss_path(store.root, name))
        except IndexDamagedError:
            # `index backend` in another process replaced meta.json and deleted the file it named
            # between the two reads: the new meta.json names a file that exists.
            if attempt + 1 == _ATTEMPTS or store.meta_stamp() == stamp:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
