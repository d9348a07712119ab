"""Search backends behind one interface: exact search and FAISS (flat, HNSW, IVF-PQ).

A backend only proposes candidate ids for each query. :func:`rank_candidates` then measures every
candidate's exact Euclidean distance from the stored codes and ranks by (distance, id), so all
backends report true distances, and a FAISS index that holds compressed codes (IVF-PQ) is refined
with the exact ones (it proposes ``refine`` times more candidates than asked for).

- ``exact``: the project's blocked inner-product search (:mod:`neuralcodes.retrieval.search`) over
  the memory-mapped codes, a slice of rows at a time, so memory stays bounded.
- ``flat``: FAISS ``IndexFlatL2``, exhaustive.
- ``hnsw``: FAISS ``IndexHNSWFlat``, a graph over the float codes: fast, approximate, in memory.
- ``ivfpq``: FAISS ``IndexIVFPQ``, trained on a sample of the codes; holds only 8-bit product-quantised
  codes (dim / 8 bytes per image), for collections whose float codes do not fit in memory.

FAISS indexes use the L2 metric, not inner product: float16 codes are unit vectors only to ~1e-3, and
an inner product then ranks near-duplicates (distances of that order) by their norms, proposing
candidates that the exact re-ranking cannot repair.

``auto`` picks exact up to :data:`EXACT_MAX_ROWS` images, HNSW while the float codes take at most
a quarter of the machine's memory, IVF-PQ beyond. :func:`finish_backend` brings an index's backend up to
date with its codes after a build, an add, a merge or `neuralcodes index backend`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from neuralcodes import io
from neuralcodes.index.store import IndexDamagedError, Store, faiss_path
from neuralcodes.progress import console
from neuralcodes.retrieval.search import search

BACKENDS = ("exact", "flat", "hnsw", "ivfpq")
EXACT_MAX_ROWS = 200_000
IVFPQ_MIN_ROWS = (
    10_000  # enough to train 256 centroids per sub-quantiser (FAISS asks for 39 points each)
)
EXACT_SLACK = (
    16  # extra candidates of exact search, re-ranked by true distance (see Backend.candidates)
)
_SLICE_BYTES = 256 << 20  # exact search and FAISS adds read the codes this much at a time

DEFAULTS: dict[str, dict[str, Any]] = {
    "exact": {},
    "flat": {},
    # efConstruction 80, twice FAISS's default: on hard (near-isotropic) codes recall@10 rises from 0.76 to 0.94.
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128},
    # refine: candidates per result re-ranked with the exact codes; PQ distances alone recall ~half.
    "ivfpq": {"nprobe": 32, "nbits": 8, "refine": 10},
}


def choose_backend(rows: int, dim: int, memory_bytes: int | None = None) -> str:
    """The backend ``auto`` means for a collection of ``rows`` codes of ``dim`` floats."""
    if rows <= EXACT_MAX_ROWS:
        return "exact"
    memory_bytes = memory_bytes or _physical_memory()
    return "hnsw" if rows * dim * 4 <= memory_bytes // 4 else "ivfpq"


def backend_params(
    name: str, rows: int, dim: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters of backend ``name`` for this collection (IVF-PQ's list count and sub-quantisers grow with it)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    params = dict(DEFAULTS[name])
    if name == "ivfpq":
        params["nlist"] = int(2 ** round(math.log2(max(1.0, math.sqrt(rows)))))
        params["m"] = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    params.update(overrides or {})
    return params


class Backend:
    """Exact search: no state beyond the codes themselves."""

    name = "exact"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def candidates(self, codes: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
        """(Q, n') int64 candidate ids, best first, -1 where there are fewer."""
        rows = len(codes)
        # A few more than asked for: the blocked search ranks by inner products, whose float32 resolution
        # cannot order near-duplicates (distances ~1e-3); rank_candidates orders them exactly.
        n = min(n + EXACT_SLACK, rows)
        step = max(n, _SLICE_BYTES // max(1, codes.shape[1] * codes.itemsize))
        found_ids, found_d = [], []
        for start in range(0, rows, step):
            part = np.array(
                codes[start : start + step], dtype=np.float32
            )  # a writable copy for torch
            ids, dist = search(queries, part, k=min(n, len(part)))
            found_ids.append(ids + start)
            found_d.append(dist)
        ids, dist = np.concatenate(found_ids, axis=1), np.concatenate(found_d, axis=1)
        # Slices hold increasing ids and each is ordered by (distance, id): a stable sort keeps that order.
        order = np.argsort(dist, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(ids, order, axis=1)

    def sync(self, codes: np.ndarray) -> None:
        """Bring the backend up to date with all ``codes`` (rows are only ever appended)."""

    def extendable(self, rows: int) -> bool:
        return True

    def save(self, path: Path) -> None:
        pass

    def check(self, rows: int, dim: int, path: Path) -> None:
        pass


class FaissBackend(Backend):
    """A FAISS index over the codes, saved as one file inside the index folder."""

    def __init__(self, name: str, params: dict[str, Any], index: Any = None) -> None:
        super().__init__(params)
        self.name = name
        self.index = index

    def _new_index(self, codes: np.ndarray) -> Any:
        faiss = _faiss()
        dim, p = codes.shape[1], self.params
        if self.name == "flat":
            return faiss.IndexFlatL2(dim)
        if self.name == "hnsw":
            index = faiss.IndexHNSWFlat(dim, int(p["M"]), faiss.METRIC_L2)
            index.hnsw.efConstruction = int(p["ef_construction"])
            return index
        if len(codes) < IVFPQ_MIN_ROWS:
            raise ValueError(
                f"the ivfpq backend needs at least {IVFPQ_MIN_ROWS:,} images to train on, this index has "
                f"{len(codes):,}; use --backend exact, flat or hnsw (or auto)"
            )
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatL2(dim),
            dim,
            int(p["nlist"]),
            int(p["m"]),
            int(p["nbits"]),
            faiss.METRIC_L2,
        )
        # A fixed sample (sorted: the memory map is read in order) so that a rebuild trains the same index.
        sample = min(len(codes), max(64 * int(p["nlist"]), 64 * 2 ** int(p["nbits"])))
        rows = np.sort(np.random.default_rng(0).choice(len(codes), size=sample, replace=False))
        index.train(np.ascontiguousarray(codes[rows], dtype=np.float32))
        return index

    def sync(self, codes: np.ndarray) -> None:
        if self.index is None:
            self.index = self._new_index(codes)
        step = max(1, _SLICE_BYTES // max(1, codes.shape[1] * 4))
        for start in range(int(self.index.ntotal), len(codes), step):
            self.index.add(np.ascontiguousarray(codes[start : start + step], dtype=np.float32))

    def extendable(self, rows: int) -> bool:
        """Whether :meth:`sync` can bring this (loaded) index up to ``rows`` codes, or it must be built anew:
        it holds more rows than the codes, or it is an inner-product index of an older version."""
        return self.index.ntotal <= rows and self.index.metric_type == _faiss().METRIC_L2

    def candidates(self, codes: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
        n = min(n * int(self.params.get("refine", 1)), len(codes))
        # Search parameters are set on the index, not passed as SearchParameters: importing
        # faiss.contrib.torch_utils (pytorch-metric-learning does) replaces search() by a version
        # without the params argument.
        if self.name == "hnsw":
            self.index.hnsw.efSearch = max(int(self.params["ef_search"]), n)
        elif self.name == "ivfpq":
            self.index.nprobe = int(self.params["nprobe"])
        _, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), n)
        return ids.astype(np.int64)

    def save(self, path: Path) -> None:
        with io.atomic_path(path) as tmp:
            _faiss().write_index(self.index, str(tmp))

    def check(self, rows: int, dim: int, path: Path) -> None:
        if self.index.d != dim or self.index.ntotal != rows:
            raise IndexDamagedError(
                f"{path} holds {self.index.ntotal:,} codes of {self.index.d} dimensions but the index has "
                f"{rows:,} of {dim}: the FAISS file is stale or damaged; rebuild it with `neuralcodes index "
                "backend INDEX NAME`"
            )


def new_backend(name: str, params: dict[str, Any]) -> Backend:
    return Backend(params) if name == "exact" else FaissBackend(name, params)


def load_backend(name: str, params: dict[str, Any], path: Path) -> Backend:
    if name == "exact":
        return Backend(params)
    if name not in BACKENDS:
        raise ValueError(
            f"the index names an unknown backend {name!r}; this neuralcodes knows {', '.join(BACKENDS)}"
        )
    if not path.is_file():
        raise IndexDamagedError(
            f"{path} is missing: the {name} backend's FAISS index; rebuild it with `neuralcodes index backend INDEX NAME`"
        )
    try:
        index = _faiss().read_index(str(path))
    except RuntimeError as exc:
        raise IndexDamagedError(
            f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); "
            "rebuild it with `neuralcodes index backend INDEX NAME`"
        ) from None
    return FaissBackend(name, params, index)


def finish_backend(store: Store, requested: str | None = None) -> str:
    """Bring the search backend up to date with the codes (building it when new or changed); its name."""
    requested = requested or store.meta.backend.get("requested") or "auto"
    rows = store.rows
    name = choose_backend(rows, store.meta.dim) if requested == "auto" else requested
    if (
        name == "ivfpq" and rows < IVFPQ_MIN_ROWS
    ):  # kept as requested: it is built once there are enough
        console.print(
            f"the ivfpq backend trains on at least {IVFPQ_MIN_ROWS:,} images and this index has {rows:,}: "
            "searching exactly until it has them"
        )
        name = "exact"
    old = store.meta.backend
    file = faiss_path(store.root, name)
    params = backend_params(
        name, rows, store.meta.dim, old.get("params") if old.get("name") == name else None
    )
    if old.get("name") == name and name != "exact" and file.exists():
        backend = load_backend(name, params, file)
        if not backend.extendable(rows):
            backend = new_backend(name, params)
    else:
        backend = new_backend(name, params)
    with console.status(f"{name} backend: indexing {rows:,} codes"):
        backend.sync(store.codes())
    if name != "exact":
        backend.save(file)
    store.set_backend({"requested": requested, "name": name, "params": params})
    for other in store.root.glob("faiss-*.index"):
        if other != file:
            other.unlink()
    return name


def rank_candidates(
    codes: np.ndarray, queries: np.ndarray, candidates: np.ndarray, live: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest live candidates by exact Euclidean distance, ties by id: (ids, distances), -1 / inf pad."""
    q, n = candidates.shape
    valid = candidates >= 0
    valid[valid] = live[candidates[valid]]
    safe = np.where(valid, candidates, 0)
    vectors = np.asarray(codes[safe.ravel()], dtype=np.float32).reshape(q, n, -1)
    # The difference itself, not |a|^2 + |b|^2 - 2 a.b: near-duplicates sit ~1e-3 apart, where the
    # expansion's float32 cancellation errs by ~10% and would order them at random.
    diff = vectors - queries[:, None, :]
    distances = np.sqrt(np.einsum("qnd,qnd->qn", diff, diff)).astype(np.float32)
    distances[~valid] = np.inf
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), distances), axis=-1)[
        :, :k
    ]
    ids = np.take_along_axis(np.where(valid, candidates, -1), order, axis=1)
    return ids, np.take_along_axis(distances, order, axis=1)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a dependency, but give the fix if it is missing
        raise ImportError("the FAISS backends need faiss-cpu: `pip install faiss-cpu`") from exc
    return faiss


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30
