"""The one-call evaluator: every retrieval figure of a set of codes (or of re-ranked scores) at once.

It ranks in blocks of queries (:mod:`neuralcodes.retrieval.search`, never the whole ranking in memory)
and scores each block with the primitives of :mod:`neuralcodes.retrieval.metrics`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from neuralcodes.retrieval.metrics import (
    _RESULTS,
    DEFAULT_KS,
    _ap_at_r,
    _as_levels,
    _as_ties,
    _average_precision,
    _find_hits,
    _hits_at_k,
    _interpolated_precision,
    _tie_averaged,
    _to_numpy,
)
from neuralcodes.retrieval.search import (
    check_k,
    iter_leave_one_out,
    iter_ranked_by_scores,
    iter_search,
)


def retrieval_metrics(
    codes: np.ndarray | None,
    labels: np.ndarray,
    ks: Sequence[int] | None = None,
    recall_levels: Sequence[float] | None = None,
    block_size: int | None = None,
    ties: str = "index",
    database: np.ndarray | None = None,
    database_labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> dict:
    """Retrieval metrics over full rankings, computed in blocks of queries (never the whole ranking).

    ``codes``: (Q, D) numeric array or tensor (float64 and tensors are converted to float32 numpy),
    finite, usually L2-normalised (distances are Euclidean, so unnormalised codes are ranked as given).
    ``labels``: (Q,) class of each code, any comparable values (ints, strings), one per code.
    Without ``database``: leave-one-out, every code queries all the others. With ``database`` (N, D)
    and ``database_labels`` (N,): every code queries the whole database. ``ks``: the cut-offs of P@k
    and R@k; None takes those of ``DEFAULT_KS`` the ranking is long enough for, an explicit k beyond
    the ranking is an error. Returns ``{"mAP", "AP" ((Q,) float64 array), "mAP@R", "P@k", "R@k" for
    each k, "recall_levels", "precision_at_recall", "n_queries"}``; ``ties`` as in the metrics module doc.

    ``scores``: a (Q, N) matrix (higher is nearer; e.g. :func:`neuralcodes.retrieval.rerank.rerank`) that
    ranks the results instead of the codes' distances; ``codes`` is then None, and N is the number of
    labels (leave-one-out: each query's own column is left out) or of ``database_labels``.
    """
    ties = _as_ties(ties)
    labels = _to_numpy(labels)
    if (codes is None) == (scores is None):
        raise ValueError(
            "pass codes (ranked by distance) or scores (ranked by score), exactly one of them"
        )
    if scores is not None:
        return _metrics_of_scores(
            np.asarray(scores), labels, ks, recall_levels, block_size, ties, database_labels
        )
    _check_one_label_per_code(codes, labels, "codes", "labels")
    if database is not None:
        database_labels = None if database_labels is None else _to_numpy(database_labels)
        _check_one_label_per_code(database, database_labels, "database", "database_labels")
    query_ids, database_ids, n_relevant = _relevance_counts(labels, database, database_labels)
    if database is None:
        blocks = iter_leave_one_out(
            codes, block_size=block_size, with_distances=False, tie_keys=ties == "average"
        )
    else:
        blocks = iter_search(
            codes, database, block_size=block_size, with_distances=False, tie_keys=ties == "average"
        )
    n_results = len(query_ids) - 1 if database is None else len(database_ids)
    return _scored(
        blocks,
        query_ids,
        database_ids,
        n_relevant,
        _as_ks(ks, n_results),
        _as_levels(recall_levels),
    )


def _metrics_of_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] | None,
    recall_levels: Sequence[float] | None,
    block_size: int | None,
    ties: str,
    database_labels: np.ndarray | None,
) -> dict:
    loo = database_labels is None
    n_database = len(labels) if loo else len(database_labels)  # type: ignore[arg-type]
    if scores.shape != (len(labels), n_database):
        raise ValueError(
            f"scores must be (queries, database) = ({len(labels)}, {n_database}), got {scores.shape}"
        )
    if not loo:
        database_labels = _to_numpy(database_labels)
    database = None if loo else scores.T  # only its length is read: one row per database item
    query_ids, database_ids, n_relevant = _relevance_counts(labels, database, database_labels)
    blocks = iter_ranked_by_scores(scores, loo, block_size, tie_keys=ties == "average")
    n_results = n_database - 1 if loo else n_database
    return _scored(
        blocks,
        query_ids,
        database_ids,
        n_relevant,
        _as_ks(ks, n_results),
        _as_levels(recall_levels),
    )


def _scored(
    blocks: Iterable,
    query_ids: np.ndarray,
    database_ids: np.ndarray,
    n_relevant: np.ndarray,
    ks: tuple[int, ...],
    levels: np.ndarray,
) -> dict:
    n = len(query_ids)
    ap = np.empty(n)
    ap_at_r = np.empty(n)
    hits_at_k = {k: np.empty(n) for k in ks}
    pr_total = np.zeros(levels.size)
    for start, indices, keys in blocks:
        block = slice(start, start + indices.shape[0])
        relevance = np.take(database_ids, indices) == query_ids[block, None]
        hits = _find_hits(relevance)
        n_rel = n_relevant[block]
        ap[block] = _average_precision(
            hits if keys is None else _tie_averaged(hits, relevance, keys), n_rel
        )
        ap_at_r[block] = _ap_at_r(hits, n_rel)
        for k in ks:
            hits_at_k[k][block] = _hits_at_k(hits, k)
        pr_total += _interpolated_precision(hits, n_rel, levels).sum(axis=0)

    result: dict = {
        "mAP": float(ap.mean()),
        "AP": ap,
        "mAP@R": float(ap_at_r.mean()),
        "n_queries": n,
    }
    for k in ks:
        result[f"P@{k}"] = float(hits_at_k[k].mean() / k)
        result[f"R@{k}"] = float((hits_at_k[k] / n_relevant).mean())
    result["recall_levels"] = levels
    result["precision_at_recall"] = pr_total / n
    return result


def _check_one_label_per_code(
    codes: object, labels: np.ndarray | None, what: str, labels_name: str
) -> None:
    """Codes must be a 2-D matrix with one label per row: a mismatch would otherwise fail deep in the
    blocks (shorter labels) or, worse, score garbage rows silently (longer labels)."""
    shape = tuple(np.shape(codes))  # no copy: tensors and arrays report their shape
    if len(shape) != 2:
        raise ValueError(f"{what} must be a 2-D (items, dimensions) array, got shape {shape}")
    if labels is not None and labels.ndim == 1 and len(labels) != shape[0]:
        raise ValueError(
            f"{labels_name} must hold one label per row of {what}: {what} has {shape[0]} rows, "
            f"{labels_name} has {len(labels)}"
        )


def _as_ks(ks: Sequence[int] | None, n_results: int) -> tuple[int, ...]:
    if ks is None:  # the defaults adapt to a small set; only cut-offs the user named must fit
        return tuple(k for k in DEFAULT_KS if k <= n_results)
    if isinstance(ks, (int, np.integer)) or not isinstance(ks, Iterable):
        raise TypeError(f"ks must be a sequence of cut-offs, e.g. ks=({ks!r},), got {ks!r}")
    return tuple(check_k(k, n_results, _RESULTS) for k in ks)  # type: ignore[misc]


def _relevance_counts(
    labels: np.ndarray, database: np.ndarray | None, database_labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query and database labels as small class ids, and each query's number of relevant items."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per code), got shape {labels.shape}")
    if (database is None) != (database_labels is None):
        raise ValueError(
            "pass database and database_labels together (or neither, for leave-one-out)"
        )
    if database_labels is None:
        classes, ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
        ids = ids.astype(np.int32)  # np.take on a small dtype is several times faster
        lonely = classes[counts == 1]
        if lonely.size:
            raise ValueError(
                f"{lonely.size} queries are the only image of their class (labels {lonely[:5].tolist()}...): "
                "nothing is relevant to them; leave them out before evaluating"
            )
        return ids, ids, counts[ids] - 1
    database_labels = np.asarray(database_labels)
    if database_labels.ndim != 1 or len(database_labels) != len(database):  # type: ignore[arg-type]
        raise ValueError(
            f"database_labels must hold one label per database code, got shape {database_labels.shape}"
        )
    classes, ids = np.unique(np.concatenate([labels, database_labels]), return_inverse=True)
    ids = ids.astype(np.int32)
    query_ids, database_ids = ids[: len(labels)], ids[len(labels) :]
    n_relevant = np.bincount(database_ids, minlength=len(classes))[query_ids]
    missing = np.unique(labels[n_relevant == 0])
    if missing.size:
        raise ValueError(
            f"query classes {missing[:10].tolist()} have no image in the database; their AP is undefined: "
            "leave those queries out or add their classes to the database"
        )
    return query_ids, database_ids, n_relevant
