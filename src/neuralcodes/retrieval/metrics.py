"""Retrieval and classification metrics over ranked relevance matrices (numpy, vectorised).

A ranked relevance matrix ``relevance`` is a boolean (Q, N) array: ``relevance[q, r]`` says whether
the result at rank ``r + 1`` of query ``q`` is relevant (same class). ``n_relevant[q]`` is the number
of relevant items for ``q`` in the whole database, which can exceed the relevant items visible in a
truncated ranking. Every retrieval metric here reads these two arrays; no Python loop runs over queries
(queries are processed in blocks only to bound memory).

Recall@k here is the information-retrieval recall (share of the query's relevant items found in the
first k), not the "at least one hit in the first k" rate some metric-learning papers call Recall@k.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np

from neuralcodes.retrieval.search import iter_leave_one_out

# Queries per block: keeps the temporary arrays of a block near 2**22 elements.
_BLOCK_ELEMENTS = 1 << 22

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
DEFAULT_RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


# --------------------------------------------------------------------------- validation


def _as_relevance(relevance: np.ndarray) -> np.ndarray:
    relevance = np.asarray(relevance)
    if relevance.ndim != 2:
        raise ValueError(
            f"relevance must be a 2-D (queries, ranked results) array, got shape {relevance.shape}"
        )
    if relevance.dtype != bool:
        if not np.isin(relevance, (0, 1)).all():
            raise ValueError("relevance must hold booleans (or 0/1): is result r relevant to query q")
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
            raise ValueError("n_relevant must hold whole numbers (counts of relevant database items)")
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


def _check_k(k: int, n_results: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_results:
        raise ValueError(f"k={k} exceeds the {n_results} ranked results per query; pass a longer ranking or a smaller k")
    return int(k)


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


def _ap_at_r(hits: _Hits, n_relevant: np.ndarray) -> np.ndarray:
    within_r = hits.ranks <= n_relevant[hits.rows]
    summed = np.bincount(hits.rows[within_r], weights=hits.precision[within_r], minlength=hits.n_queries)
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


def average_precision(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """(Q,) non-interpolated average precision over the full ranking.

    AP = (1/R) * sum over the ranks r of the relevant results of precision@r, with R = ``n_relevant``
    (relevant items in the database, so a relevant item missing from a truncated ranking counts as
    precision 0). A query with R = 0 raises ``ValueError``.
    """
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    ap = np.empty(relevance.shape[0])
    for block in _query_blocks(*relevance.shape):
        ap[block] = _average_precision(_find_hits(relevance[block]), n_relevant[block])
    return ap


def mean_average_precision(relevance: np.ndarray, n_relevant: np.ndarray) -> float:
    """Mean over queries of :func:`average_precision`."""
    return float(average_precision(relevance, n_relevant).mean())


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of the share of relevant results among the first ``k``."""
    relevance = _as_relevance(relevance)
    k = _check_k(k, relevance.shape[1])
    return float(relevance[:, :k].sum(axis=1).mean() / k)


def recall_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean over queries of the share of the query's ``n_relevant`` items found among the first ``k``."""
    relevance = _as_relevance(relevance)
    n_relevant = _as_n_relevant(n_relevant, relevance)
    k = _check_k(k, relevance.shape[1])
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
        total += _interpolated_precision(_find_hits(relevance[block]), n_relevant[block], levels).sum(axis=0)
    return levels, total / relevance.shape[0]


def _as_levels(recall_levels: Sequence[float] | None) -> np.ndarray:
    levels = DEFAULT_RECALL_LEVELS if recall_levels is None else np.asarray(recall_levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or np.any((levels < 0) | (levels > 1)) or np.any(np.isnan(levels)):
        raise ValueError("recall_levels must be a non-empty 1-D list of numbers in [0, 1]")
    return levels


# --------------------------------------------------------------------------- classification and triplets


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of samples whose true class is among the ``k`` highest scores.

    Ties are broken by class index, as ``argmax`` does, so ``top_k_accuracy(.., k=1)`` equals the
    accuracy of ``logits.argmax(1)``.
    """
    logits, labels = _as_logits_labels(logits, labels)
    k = _check_k(k, logits.shape[1])
    true_score = np.take_along_axis(logits, labels[:, None], axis=1)
    classes = np.arange(logits.shape[1])[None, :]
    ahead = (logits > true_score) | ((logits == true_score) & (classes < labels[:, None]))
    return float(np.mean(ahead.sum(axis=1) < k))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy."""
    return top_k_accuracy(logits, labels, k=1)


def _as_logits_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = _to_numpy(logits), _to_numpy(labels)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (samples, classes) array, got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match logits, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) (one logit per class)")
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN; the model diverged or its input was invalid")
    return logits, labels.astype(np.int64)


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


# --------------------------------------------------------------------------- one-call evaluator


def retrieval_metrics(
    codes: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    recall_levels: Sequence[float] | None = None,
    block_size: int | None = None,
) -> dict:
    """Leave-one-out retrieval metrics: every code queries all the others (full ranking).

    Returns ``{"mAP", "AP" (per-query array), "mAP@R", "P@k", "R@k" for each k in ks,
    "recall_levels", "precision_at_recall", "n_queries"}``. The ranking is computed in blocks of
    queries, so the (N, N) ranking is never held whole.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per code), got shape {labels.shape}")
    classes, label_ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_relevant = counts[label_ids] - 1
    lonely = classes[counts == 1]
    if lonely.size:
        raise ValueError(
            f"{lonely.size} queries are the only image of their class (labels {lonely[:5].tolist()}...): "
            "nothing is relevant to them; leave them out before evaluating"
        )
    ks = tuple(_check_k(k, n - 1) for k in ks)
    levels = _as_levels(recall_levels)

    ap = np.empty(n)
    ap_at_r = np.empty(n)
    hits_at_k = {k: np.empty(n) for k in ks}
    pr_total = np.zeros(levels.size)
    label_ids = label_ids.astype(np.int32)  # np.take on a small dtype is several times faster
    for start, indices, _ in iter_leave_one_out(codes, block_size=block_size, with_distances=False):
        block = slice(start, start + indices.shape[0])
        hits = _find_hits(np.take(label_ids, indices) == label_ids[block, None])
        n_rel = n_relevant[block]
        ap[block] = _average_precision(hits, n_rel)
        ap_at_r[block] = _ap_at_r(hits, n_rel)
        for k in ks:
            hits_at_k[k][block] = _hits_at_k(hits, k)
        pr_total += _interpolated_precision(hits, n_rel, levels).sum(axis=0)

    result: dict = {"mAP": float(ap.mean()), "AP": ap, "mAP@R": float(ap_at_r.mean()), "n_queries": n}
    for k in ks:
        result[f"P@{k}"] = float(hits_at_k[k].mean() / k)
        result[f"R@{k}"] = float((hits_at_k[k] / n_relevant).mean())
    result["recall_levels"] = levels
    result["precision_at_recall"] = pr_total / n
    return result
