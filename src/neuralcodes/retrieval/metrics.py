"""Retrieval and classification metrics over ranked relevance matrices (numpy, vectorised).

A ranked relevance matrix ``relevance`` is a boolean (Q, N) array: ``relevance[q, r]`` says whether
the result at rank ``r + 1`` of query ``q`` is relevant (same class). ``n_relevant[q]`` is the number
of relevant items for ``q`` in the whole database, which can exceed the relevant items visible in a
truncated ranking. Every retrieval metric here reads these two arrays; no Python loop runs over queries
(queries are processed in blocks only to bound memory).

Ties: a ranking orders results tied in distance by database index, so every metric is deterministic
(the default, ``ties="index"``). ``ties="average"`` instead scores AP as scikit-learn's
``average_precision_score`` does: results tied in distance form one threshold, and every relevant
result of a tied group gets the precision at the group's end, whatever order the group is listed
in. Only AP and mAP take this option; P@k, R@k, mAP@R and the PR curve always break ties by index.

Recall@k here is the information-retrieval recall (share of the query's relevant items found in the
first k), not the "at least one hit in the first k" rate some metric-learning papers call Recall@k.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np

from neuralcodes.retrieval.search import check_k

# Queries per block: keeps the temporary arrays of a block near 2**22 elements.
_BLOCK_ELEMENTS = 1 << 22

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
DEFAULT_RECALL_LEVELS = np.linspace(0.0, 1.0, 11)
TIES = ("index", "average")
_RESULTS = "ranked results per query"


# --------------------------------------------------------------------------- validation


def _as_relevance(relevance: np.ndarray) -> np.ndarray:
    relevance = np.asarray(relevance)
    if relevance.ndim != 2:
        raise ValueError(
            f"relevance must be a 2-D (queries, ranked results) array, got shape {relevance.shape}"
        )
    if relevance.dtype != bool:
        if not np.isin(relevance, (0, 1)).all():
            raise ValueError(
                "relevance must hold booleans (or 0/1): is result r relevant to query q"
            )
        relevance = relevance.astype(bool)
    return relevance


def _as_n_relevant(n_relevant: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    n_relevant = np.asarray(n_relevant)
    n_queries = relevance.shape[0]
    if n_relevant.shape != (n_queries,):
        raise ValueError(
            f"n_relevant must have one count per query, shape ({n_queries},), got {n_relevant.shape}"
        )
    if not np.issubdtype(n_relevant.dtype, np.integer):
        if not np.all(np.isfinite(n_relevant)) or np.any(n_relevant != np.round(n_relevant)):
            raise ValueError(
                "n_relevant must hold whole numbers (counts of relevant database items)"
            )
    n_relevant = n_relevant.astype(np.int64)
    empty = int(np.count_nonzero(n_relevant <= 0))
    if empty:
        raise ValueError(
            f"{empty} of {n_queries} queries have no relevant item in the database (n_relevant <= 0); "
            "their AP is undefined: leave those queries out (e.g. classes with a single image)"
        )
    seen = relevance.sum(axis=1)
    over = int(np.count_nonzero(seen > n_relevant))
    if over:
        raise ValueError(
            f"{over} queries show more relevant results than their n_relevant; "
            "n_relevant must count all relevant items in the database"
        )
    return n_relevant


def _query_blocks(n_queries: int, n_results: int) -> Iterable[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(1, n_results))
    for start in range(0, n_queries, step):
        yield slice(start, min(start + step, n_queries))


# --------------------------------------------------------------------------- per-query kernels


class _Hits(NamedTuple):
    """Every relevant result of a block of queries, in ranked order within each query."""

    rows: np.ndarray  # query of each hit, ascending
    ranks: np.ndarray  # 1-based rank of the hit in its query's ranking
    precision: np.ndarray  # precision at that rank: hit number / rank
    per_row: np.ndarray  # hits per query
    n_queries: int


def _find_hits(relevance: np.ndarray) -> _Hits:
    n_queries, n_results = relevance.shape
    flat = np.flatnonzero(relevance)  # row-major: each query's hits come out in rank order
    rows = flat // n_results
    ranks = flat - rows * n_results + 1
    per_row = np.bincount(rows, minlength=n_queries)
    first = np.cumsum(per_row) - per_row
    hit_number = np.arange(1, flat.size + 1) - first[rows]
    return _Hits(rows, ranks, hit_number / ranks, per_row, n_queries)


def _average_precision(hits: _Hits, n_relevant: np.ndarray) -> np.ndarray:
    return np.bincount(hits.rows, weights=hits.precision, minlength=hits.n_queries) / n_relevant


def _tie_averaged(hits: _Hits, relevance: np.ndarray, ranked_keys: np.ndarray) -> _Hits:
    """``hits`` with each hit's precision taken at the end of its group of tied results."""
    if hits.rows.size == 0:
        return hits
    last = relevance.shape[1] - 1
    # Position j ends a group where the next key differs; the last position always ends one.
    ends = np.full(relevance.shape, last, dtype=np.int32)
    ends[:, :-1] = np.where(
        ranked_keys[:, 1:] != ranked_keys[:, :-1], np.arange(last, dtype=np.int32), last
    )
    ends = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]  # first group end at or after j
    end = ends[hits.rows, hits.ranks - 1]
    hits_through_end = np.cumsum(relevance, axis=1, dtype=np.int32)[hits.rows, end]
    return hits._replace(precision=hits_through_end / (end + 1.0))


def _ap_at_r(hits: _Hits, n_relevant: np.ndarray) -> np.ndarray:
    within_r = hits.ranks <= n_relevant[hits.rows]
    summed = np.bincount(
        hits.rows[within_r], weights=hits.precision[within_r], minlength=hits.n_queries
    )
    return summed / n_relevant


def _hits_at_k(hits: _Hits, k: int) -> np.ndarray:
    return np.bincount(hits.rows, weights=hits.ranks <= k, minlength=hits.n_queries)


def _interpolated_precision(hits: _Hits, n_relevant: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(Q, L) interpolated precision: the best precision at any rank whose recall reaches each level."""
    width = max(1, int(hits.per_row.max(initial=0)))
    first = np.cumsum(hits.per_row) - hits.per_row
    precision = np.zeros((hits.n_queries, width))
    precision[hits.rows, np.arange(hits.rows.size) - first[hits.rows]] = hits.precision
    # Precision only rises at a hit, so the best precision at recall >= t is a suffix max over hits.
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    # Hits needed to reach recall t; the tolerance keeps 0.3 * 10 from rounding up to 4.
    needed = np.maximum(np.ceil(levels[None, :] * n_relevant[:, None] - 1e-9), 1).astype(np.int64)
    reached = needed <= hits.per_row[:, None]
    picked = np.take_along_axis(best_after, np.minimum(needed, width) - 1, axis=1)
    return np.where(reached, picked, 0.0)


# --------------------------------------------------------------------------- public metrics


def average_precision(
    relevance: np.ndarray,
    n_relevant: np.ndarray,
    ranked_distances: np.ndarray | None = None,
    ties: str = "index",
) -> np.ndarray:
    """(Q,) non-interpolated average precision over the full ranking.

    AP = (1/R) * sum over the ranks r of the relevant results of precision@r, with R = ``n_relevant``
    (relevant items in the database, so a relevant item missing from a truncated ranking counts as
    precision 0). A query with R = 0 raises ``ValueError``.

    ``ties="average"`` (see the module doc) needs ``ranked_distances``: the (Q, N) distances of the
    ranked results, ascending along each row; equal values mark tied results.
    """
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    keys = _as_ranked_distances(ranked_distances, relevance, _as_ties(ties))
    ap = np.empty(relevance.shape[0])
    for block in _query_blocks(*relevance.shape):
        hits = _find_hits(relevance[block])
        if keys is not None:
            hits = _tie_averaged(hits, relevance[block], keys[block])
        ap[block] = _average_precision(hits, n_relevant[block])
    return ap


def _as_ties(ties: str) -> str:
    if ties not in TIES:
        raise ValueError(
            f"ties must be one of {TIES} (break ties by database index, or average over them), got {ties!r}"
        )
    return ties


def _as_ranked_distances(
    distances: np.ndarray | None, relevance: np.ndarray, ties: str
) -> np.ndarray | None:
    if ties == "index":
        return None
    if distances is None:
        raise ValueError(
            'ties="average" needs ranked_distances: the distances of the ranked results, to find the ties'
        )
    distances = np.asarray(distances, dtype=np.float64)
    if distances.shape != relevance.shape:
        raise ValueError(
            f"ranked_distances must have the shape of relevance {relevance.shape}, got {distances.shape}"
        )
    if np.isnan(distances).any() or (np.diff(distances, axis=1) < 0).any():
        raise ValueError(
            "ranked_distances must be free of NaN and ascending along each row (nearest result first)"
        )
    return distances


def mean_average_precision(
    relevance: np.ndarray,
    n_relevant: np.ndarray,
    ranked_distances: np.ndarray | None = None,
    ties: str = "index",
) -> float:
    """Mean over queries of :func:`average_precision`."""
    return float(average_precision(relevance, n_relevant, ranked_distances, ties).mean())


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of the share of relevant results among the first ``k``."""
    relevance = _as_relevance(relevance)
    k = check_k(k, relevance.shape[1], _RESULTS)
    return float(relevance[:, :k].sum(axis=1).mean() / k)


def recall_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean over queries of the share of the query's ``n_relevant`` items found among the first ``k``."""
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    k = check_k(k, relevance.shape[1], _RESULTS)
    return float((relevance[:, :k].sum(axis=1) / n_relevant).mean())


def map_at_r(relevance: np.ndarray, n_relevant: np.ndarray) -> float:
    """mAP@R (Musgrave et al., pytorch-metric-learning): AP over the first R results, divided by R.

    R is the query's number of relevant items, so the ranking must hold at least ``max(n_relevant)``
    results.
    """
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    if n_relevant.max() > relevance.shape[1]:
        raise ValueError(
            f"mAP@R needs the first R results of every query, but a query has R={n_relevant.max()} "
            f"and the ranking holds {relevance.shape[1]}; pass a longer ranking"
        )
    values = np.empty(relevance.shape[0])
    for block in _query_blocks(*relevance.shape):
        width = int(n_relevant[block].max())  # only the first R results matter
        values[block] = _ap_at_r(_find_hits(relevance[block, :width]), n_relevant[block])
    return float(values.mean())


def precision_recall_curve(
    relevance: np.ndarray, n_relevant: np.ndarray, recall_levels: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at fixed recall levels, averaged over queries (for the PR plot).

    Interpolated precision at recall t is the best precision at any rank whose recall is at least t
    (0 where the ranking never reaches t). Returns ``(recall_levels, precision)``; by default the
    11 levels 0, 0.1, ..., 1.
    """
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    levels = _as_levels(recall_levels)
    total = np.zeros(levels.size)
    for block in _query_blocks(*relevance.shape):
        total += _interpolated_precision(
            _find_hits(relevance[block]), n_relevant[block], levels
        ).sum(axis=0)
    return levels, total / relevance.shape[0]


def _as_levels(recall_levels: Sequence[float] | None) -> np.ndarray:
    levels = (
        DEFAULT_RECALL_LEVELS
        if recall_levels is None
        else np.asarray(recall_levels, dtype=np.float64)
    )
    if (
        levels.ndim != 1
        or levels.size == 0
        or np.any((levels < 0) | (levels > 1))
        or np.any(np.isnan(levels))
    ):
        raise ValueError("recall_levels must be a non-empty 1-D list of numbers in [0, 1]")
    return levels


# ----------------------------------------------------------------------------------------------- triplets


def similarity_precision(d_pos: np.ndarray, d_neg: np.ndarray) -> float:
    """Share of triplets ranked right: D(query, positive) < D(query, negative); ties count as wrong."""
    d_pos, d_neg = _to_numpy(d_pos).astype(np.float64), _to_numpy(d_neg).astype(np.float64)
    if d_pos.shape != d_neg.shape or d_pos.ndim != 1 or d_pos.size == 0:
        raise ValueError(
            f"d_pos and d_neg must be non-empty 1-D arrays of the same length, got {d_pos.shape} and {d_neg.shape}"
        )
    if np.isnan(d_pos).any() or np.isnan(d_neg).any():
        raise ValueError("distances contain NaN; check the codes for NaN before comparing them")
    return float(np.mean(d_pos < d_neg))


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()  # type: ignore[attr-defined]
    return np.asarray(x)
