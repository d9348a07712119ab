"""Exact nearest-neighbour search by Euclidean distance, in blocks of queries.

Distances come from inner products, |a - b|^2 = |a|^2 + |b|^2 - 2 a.b (= 2 - 2 a.b for unit codes),
clamped at 0 before the square root, so one matrix product per block does the heavy work. The
general form, not ``2 - 2 a.b``, is used so that all-zero codes (kept at zero by L2 normalisation) sit at
distance 1 from unit codes, as they truly are.

Rankings order results by distance, ties by database index (as a stable sort on distance would), so
results are deterministic. The sort runs on a float32 key equivalent to the distance but finer near
sqrt(2), packed with the index into unique int64s (see ``_rank`` and ``_pack_keys``). The leave-one-out protocol excludes each query's own database index explicitly;
dropping "the first result" instead is wrong whenever a duplicate image or a second all-zero code
ties with the query at distance 0.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, NamedTuple

import numpy as np
import torch

from neuralcodes.progress import ProgressBar

# Default block: about 2**22 distances (16 MiB of float32; the packed keys and indices add 64 MiB).
_BLOCK_ELEMENTS = 1 << 22
# Leave-one-out computes the whole symmetric Gram matrix at once (BLAS syrk does half the work of a
# general product) when it needs no more memory than this.
GRAM_MAX_BYTES = 1 << 30


class RankedBlock(NamedTuple):
    """Results for the queries ``start : start + len(indices)``."""

    start: int
    indices: np.ndarray  # (B, k) int64 database indices, nearest first
    distances: (
        np.ndarray | None
    )  # (B, k) float32 Euclidean distances, ascending (None if not asked for)


def search(
    queries: np.ndarray | torch.Tensor,
    database: np.ndarray | torch.Tensor,
    k: int | None = None,
    exclude: np.ndarray | None = None,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest database codes of every query (all of them, ranked, when ``k`` is None).

    ``exclude[q]`` is a database index that query ``q`` must never return (its own image in the
    leave-one-out protocol); rankings then hold ``N - 1`` results. Returns ``(indices, distances)``,
    (Q, k) int64 and float32, nearest first, ties in database order.
    """
    blocks = list(iter_search(queries, database, k=k, exclude=exclude, block_size=block_size))
    return _concatenate(blocks)


def leave_one_out(
    codes: np.ndarray | torch.Tensor, k: int | None = None, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each code queries all the others (never itself): ``(indices, distances)`` of shape (N, k or N - 1)."""
    return _concatenate(list(iter_leave_one_out(codes, k=k, block_size=block_size)))


def iter_search(
    queries: np.ndarray | torch.Tensor,
    database: np.ndarray | torch.Tensor,
    k: int | None = None,
    exclude: np.ndarray | None = None,
    block_size: int | None = None,
    with_distances: bool = True,
    tie_keys: bool = False,
) -> Iterator[RankedBlock]:
    """:func:`search` one block of queries at a time, so the full ranking is never held whole.

    ``with_distances=False`` skips computing the distances (``RankedBlock.distances`` is None).
    ``tie_keys=True`` puts the float32 sort keys in ``RankedBlock.distances`` instead: ascending like
    the distances, and equal exactly where two results tie (the distances themselves, rounded near
    sqrt(2), would merge results whose inner products differ).
    """
    queries = _as_codes(queries, "queries")
    database = _as_codes(database, "database")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} dimensions but the database has {database.shape[1]}; "
            "both must come from the same layer (and the same PCA)"
        )
    exclude = _as_exclude(exclude, len(queries), len(database))
    k = check_k(
        k,
        len(database) - (exclude is not None),
        "database items a query can return",
        allow_none=True,
    )
    block_size = _block_size(block_size, len(database))

    db = torch.from_numpy(database)
    db_offset = _offsets(_squared_norms(database))
    q_all = torch.from_numpy(queries)
    q_sq_all = _squared_norms(queries)
    with ProgressBar(len(queries), "search", unit="queries") as bar:
        for start in range(0, len(queries), block_size):
            stop = min(start + block_size, len(queries))
            scores = torch.mm(q_all[start:stop], db.T).numpy()
            excluded = None if exclude is None else exclude[start:stop]
            yield _rank(
                start,
                scores,
                q_sq_all[start:stop],
                db_offset,
                k,
                excluded,
                _output(with_distances, tie_keys),
            )
            bar.advance(stop - start)


def iter_leave_one_out(
    codes: np.ndarray | torch.Tensor,
    k: int | None = None,
    block_size: int | None = None,
    with_distances: bool = True,
    tie_keys: bool = False,
) -> Iterator[RankedBlock]:
    """:func:`leave_one_out` one block of queries at a time (``tie_keys``: see :func:`iter_search`).

    When the (N, N) Gram matrix fits in ``GRAM_MAX_BYTES`` it is computed in one symmetric product
    (about twice as fast as N general row-block products); otherwise this is :func:`iter_search`
    with ``exclude = arange(N)``.
    """
    codes = _as_codes(codes, "codes")
    n = len(codes)
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 codes, got {n}")
    if n * n * 4 > GRAM_MAX_BYTES:
        yield from iter_search(codes, codes, k, np.arange(n), block_size, with_distances, tie_keys)
        return
    k = check_k(k, n - 1, "other codes a query can return", allow_none=True)
    block_size = _block_size(block_size, n)
    gram = codes @ codes.T  # numpy hands a @ a.T to BLAS syrk
    sq = np.diagonal(gram).copy()
    offset = _offsets(sq)
    own = np.arange(n)
    with ProgressBar(n, "leave-one-out search", unit="queries") as bar:
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            scores = gram[start:stop].copy()
            yield _rank(
                start,
                scores,
                sq[start:stop],
                offset,
                k,
                own[start:stop],
                _output(with_distances, tie_keys),
            )
            bar.advance(stop - start)


def iter_ranked_by_scores(
    scores: np.ndarray, loo: bool = False, block_size: int | None = None, tie_keys: bool = False
) -> Iterator[RankedBlock]:
    """Rankings of a (Q, N) score matrix (higher is nearer, e.g. from re-ranking), one block of queries
    at a time, ties by database index. ``loo``: the queries are the database and each query's own
    index is left out whatever its score. ``tie_keys``: ``RankedBlock.distances`` holds minus the scores
    (ascending, equal exactly where scores tie), as :func:`iter_search` does for distances."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries, database) matrix, got shape {scores.shape}")
    if loo and scores.shape[0] != scores.shape[1]:
        raise ValueError(
            f"leave-one-out scores must be square (the queries are the database), got {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN: a re-ranking step diverged; check its parameters")
    block_size = _block_size(block_size, scores.shape[1])
    n = scores.shape[1]
    for start in range(0, scores.shape[0], block_size):
        block = scores[start : start + block_size]
        order = np.argsort(-block, axis=1, kind="stable")
        if loo:
            own = np.arange(start, start + len(block))[:, None]
            order = order[order != own].reshape(len(block), n - 1)
        keys = -np.take_along_axis(block, order, axis=1) if tie_keys else None
        yield RankedBlock(start, order, keys)


def _rank(
    start: int,
    scores: np.ndarray,
    query_sq: np.ndarray,
    database_offset: np.ndarray,
    k: int | None,
    exclude: np.ndarray | None,
    output: str | None,
) -> RankedBlock:
    """Rank a block of inner products (overwritten in place): indices and distances, nearest first.

    ``database_offset`` is ``(|b|^2 - 1) / 2``: the distance key ``offset - a.b`` orders results
    exactly as ``|a - b|^2 = |a|^2 + 1 + 2 * key`` does (|a|^2 is fixed within a row) but keeps the
    inner product's float32 resolution; the distance itself near sqrt(2), where unrelated codes sit,
    is quantised so coarsely that dozens of unrelated pairs per row would tie.
    """
    # numpy, single-threaded, on purpose: these cheap passes gain little from threads and lose a
    # lot to thread synchronisation when the machine is busy.
    key = np.subtract(database_offset[None, :], scores, out=scores)
    key += 0.0  # turns -0.0 into 0.0, which would otherwise sort before it
    width = key.shape[1]
    if exclude is not None:
        # +inf sorts after every finite key (codes are checked finite), so the excluded index is
        # always the last column and is cut off below.
        key[np.arange(key.shape[0]), exclude] = np.inf
        width -= 1
    packed = _pack_keys(key)
    if k is not None and k < width // 4:
        # Only the k nearest are wanted: select them in linear time, then sort just those. The packed
        # keys are unique, so this gives exactly the first k columns of the full sort.
        packed = np.partition(packed, k - 1, axis=1)[:, :k]
    packed = _sort_rows(packed)[:, : width if k is None else k]
    indices = packed & 0xFFFFFFFF
    if output == "keys":
        return RankedBlock(start, indices, _unpack_keys(packed))
    distances = _unpack_distances(packed, query_sq) if output == "distances" else None
    return RankedBlock(start, indices, distances)


def _output(with_distances: bool, tie_keys: bool) -> str | None:
    return "keys" if tie_keys else "distances" if with_distances else None


def _pack_keys(key: np.ndarray) -> np.ndarray:
    """int64 keys whose ascending order is (float key ascending, column index ascending).

    The float's bits become an order-preserving int32 (negative floats get their magnitude bits
    flipped) in the high half; the column index fills the low half. Sorting these unique integers
    with numpy's vectorised sort is several times faster than a stable argsort of the floats.
    """
    packed = key.view(np.int32).astype(np.int64)
    packed ^= (packed >> 31) & 0x7FFFFFFF
    packed <<= 32
    packed |= np.arange(key.shape[1], dtype=np.int64)[None, :]
    return packed


def _unpack_keys(packed: np.ndarray) -> np.ndarray:
    bits = packed >> 32
    bits ^= (bits >> 31) & 0x7FFFFFFF
    return bits.astype(np.int32).view(np.float32)


def _unpack_distances(packed: np.ndarray, query_sq: np.ndarray) -> np.ndarray:
    key = _unpack_keys(packed)
    # |a - b|^2 = |a|^2 + 1 + 2 * key, rounded monotonically in key: the distances stay sorted.
    distances = np.multiply(key, 2.0, out=key)
    distances += query_sq[:, None] + np.float32(1.0)
    np.maximum(distances, 0.0, out=distances)
    return np.sqrt(distances, out=distances)


def _sort_rows(keys: np.ndarray) -> np.ndarray:
    """Sort each row; numpy's sort releases the GIL, so row chunks run on all torch threads."""
    workers = min(torch.get_num_threads(), len(keys))
    if workers <= 1:
        keys.sort(axis=1)
        return keys
    chunks = np.array_split(np.arange(len(keys)), workers)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda rows: keys[rows[0] : rows[-1] + 1].sort(axis=1), chunks))
    return keys


def _as_codes(codes: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D (items, dimensions) array, got shape {codes.shape}"
        )
    if not (np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {codes.dtype}")
    codes = np.ascontiguousarray(codes, dtype=np.float32)
    if not np.isfinite(np.einsum("ij,ij->i", codes, codes)).all():
        raise ValueError(
            f"{name} contain NaN, inf or values too large to square in float32; "
            "check the model's outputs (l2-normalised codes are always safe)"
        )
    return codes


def _as_exclude(exclude: np.ndarray | None, n_queries: int, n_database: int) -> np.ndarray | None:
    if exclude is None:
        return None
    exclude = np.asarray(exclude)
    if exclude.shape != (n_queries,) or not np.issubdtype(exclude.dtype, np.integer):
        raise ValueError(
            f"exclude must hold one integer database index per query, shape ({n_queries},), "
            f"got {exclude.dtype} {exclude.shape}"
        )
    if exclude.min() < 0 or exclude.max() >= n_database:
        raise ValueError(f"exclude indices must lie in [0, {n_database}) (the database size)")
    return exclude.astype(np.int64)


def check_k(k: int | None, available: int, what: str, allow_none: bool = False) -> int | None:
    """``k`` as an int in ``[1, available]`` (``what`` names the ``available`` things in the message)."""
    if k is None and allow_none:
        return None
    full = " or None (full ranking)" if allow_none else ""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer{full}, got {k!r}")
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} {what}; use k <= {available}{full}")
    return int(k)


def _block_size(block_size: int | None, n_database: int) -> int:
    if block_size is None:
        return max(1, _BLOCK_ELEMENTS // n_database)
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(
            f"block_size must be a positive integer (queries per block), got {block_size!r}"
        )
    return int(block_size)


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _offsets(squared_norms: np.ndarray) -> np.ndarray:
    # Exact in float32 for unit codes (Sterbenz: |b|^2 - 1 loses nothing when |b|^2 is near 1).
    return (squared_norms - 1.0) / 2.0


def _concatenate(blocks: list[RankedBlock]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([b.indices for b in blocks], axis=0),
        np.concatenate([b.distances for b in blocks], axis=0),
    )
