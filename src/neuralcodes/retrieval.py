"""Exact nearest-neighbour search by Euclidean distance, in blocks of queries.

Distances come from inner products, |a - b|^2 = |a|^2 + |b|^2 - 2 a.b (= 2 - 2 a.b for unit codes),
clamped at 0 before the square root, so one matrix product per block does the heavy work. The
general form, not ``2 - 2 a.b``, is used so that all-zero codes (kept at zero by ``l2n``) sit at
distance 1 from unit codes, as they truly are.

Rankings sort distances with a stable sort, so ties are broken by database index and results are
deterministic. The leave-one-out protocol excludes each query's own database index explicitly;
dropping "the first result" instead is wrong whenever a duplicate image or a second all-zero code
ties with the query at distance 0.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from neuralcodes.progress import ProgressBar

# Default block: about 2**24 distances (64 MiB of float32, plus the sort's values and indices).
_BLOCK_ELEMENTS = 1 << 24
# Leave-one-out computes the whole symmetric Gram matrix at once (BLAS syrk does half the work of a
# general product) when it needs no more memory than this.
GRAM_MAX_BYTES = 1 << 30


class RankedBlock(NamedTuple):
    """Results for the queries ``start : start + len(indices)``."""

    start: int
    indices: np.ndarray  # (B, k) int64 database indices, nearest first
    distances: np.ndarray  # (B, k) float32 Euclidean distances, ascending


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
) -> Iterator[RankedBlock]:
    """:func:`search` one block of queries at a time, so the full ranking is never held whole."""
    queries = _as_codes(queries, "queries")
    database = _as_codes(database, "database")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} dimensions but the database has {database.shape[1]}; "
            "both must come from the same layer (and the same PCA)"
        )
    exclude = _as_exclude(exclude, len(queries), len(database))
    k = _check_k(k, len(database) - (exclude is not None))
    block_size = _block_size(block_size, len(database))

    db = torch.from_numpy(database)
    db_sq = _squared_norms(db)
    q_all = torch.from_numpy(queries)
    q_sq_all = _squared_norms(q_all)
    with ProgressBar(len(queries), "search", unit="queries") as bar:
        for start in range(0, len(queries), block_size):
            stop = min(start + block_size, len(queries))
            scores = torch.mm(q_all[start:stop], db.T)
            excluded = None if exclude is None else exclude[start:stop]
            yield _rank(start, scores, q_sq_all[start:stop], db_sq, k, excluded)
            bar.advance(stop - start)


def iter_leave_one_out(
    codes: np.ndarray | torch.Tensor, k: int | None = None, block_size: int | None = None
) -> Iterator[RankedBlock]:
    """:func:`leave_one_out` one block of queries at a time.

    When the (N, N) Gram matrix fits in ``GRAM_MAX_BYTES`` it is computed in one symmetric product
    (about twice as fast as N general row-block products); otherwise this is :func:`iter_search`
    with ``exclude = arange(N)``.
    """
    codes = _as_codes(codes, "codes")
    n = len(codes)
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 codes, got {n}")
    if n * n * 4 > GRAM_MAX_BYTES:
        yield from iter_search(codes, codes, k=k, exclude=np.arange(n), block_size=block_size)
        return
    k = _check_k(k, n - 1)
    block_size = _block_size(block_size, n)
    gram = torch.from_numpy(codes @ codes.T)  # numpy hands a @ a.T to BLAS syrk
    sq = torch.diagonal(gram).clone()
    own = np.arange(n)
    with ProgressBar(n, "leave-one-out search", unit="queries") as bar:
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            yield _rank(start, gram[start:stop].clone(), sq[start:stop], sq, k, own[start:stop])
            bar.advance(stop - start)


def _rank(
    start: int,
    scores: torch.Tensor,
    query_sq: torch.Tensor,
    database_sq: torch.Tensor,
    k: int | None,
    exclude: np.ndarray | None,
) -> RankedBlock:
    """Turn a block of inner products (overwritten in place) into ranked indices and distances."""
    distances = scores.mul_(-2.0).add_(query_sq[:, None]).add_(database_sq[None, :]).clamp_min_(0.0).sqrt_()
    width = distances.shape[1]
    if exclude is not None:
        # +inf sorts after every finite distance (codes are checked finite), so the excluded
        # index is always the last column and is cut off below.
        rows = torch.arange(distances.shape[0])
        distances[rows, torch.from_numpy(exclude)] = float("inf")
        width -= 1
    keep = width if k is None else k
    values, order = torch.sort(distances, dim=1, stable=True)
    return RankedBlock(start, order[:, :keep].numpy(), values[:, :keep].numpy())


def _as_codes(codes: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items, dimensions) array, got shape {codes.shape}")
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


def _check_k(k: int | None, available: int) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer or None (full ranking), got {k!r}")
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} database items a query can return; use k <= {available} or None")
    return int(k)


def _block_size(block_size: int | None, n_database: int) -> int:
    if block_size is None:
        return max(1, _BLOCK_ELEMENTS // n_database)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer (queries per block), got {block_size!r}")
    return int(block_size)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,ij->i", x, x)


def _concatenate(blocks: list[RankedBlock]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([b.indices for b in blocks], axis=0),
        np.concatenate([b.distances for b in blocks], axis=0),
    )
