"""Re-ranking an index's search results with the library's steps (:mod:`neuralcodes.retrieval.rerank`).

The index finds each query's ``shortlist`` nearest live images, then the step re-orders them among
themselves (:func:`~neuralcodes.retrieval.rerank.rerank_shortlist`, from the stored codes only), and the
first ``k`` are kept. Distances stay the true Euclidean code distances, so re-ranked results need not be
sorted by distance: the step's order is the answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuralcodes.retrieval.rerank import RERANKERS, parameters, rerank_shortlist

__all__ = ["check_rerank", "rerank_results"]


def check_rerank(rerank: str | None, shortlist: int, rerank_params: dict[str, Any] | None) -> None:
    """A clear ValueError for an unknown step or parameter, or a shortlist that is not a positive integer."""
    if isinstance(shortlist, bool) or not isinstance(shortlist, (int, np.integer)) or shortlist < 1:
        raise ValueError(
            f"shortlist must be a positive integer (the nearest images a re-ranking re-orders), "
            f"got {shortlist!r}"
        )
    if rerank is None:
        if rerank_params:  # silently ignored parameters would look like a step that does nothing
            raise ValueError(
                "rerank_params given without rerank; name a re-ranking step: "
                f"{', '.join(RERANKERS)}"
            )
        return
    if not isinstance(rerank, str):
        raise ValueError(
            f"rerank must be a step's name, one of {', '.join(RERANKERS)}; got {rerank!r}"
        )
    parameters(rerank, **(rerank_params or {}))


def rerank_results(
    rerank: str,
    queries: np.ndarray,
    ids: np.ndarray,
    distances: np.ndarray,
    codes: np.ndarray,
    k: int,
    rerank_params: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each query's shortlist ``ids`` ((Q, n), nearest first, -1 padded) in the step's order,
    with their distances carried along: ((Q, k) ids, (Q, k) distances), -1 / inf past a short shortlist."""
    out_ids = np.full((ids.shape[0], k), -1, dtype=np.int64)
    out_distances = np.full((ids.shape[0], k), np.inf, dtype=np.float32)
    for i, row in enumerate(ids):
        # An approximate backend may find fewer live images than asked for; its -1 padding is not an id
        # (codes[-1] would be the last image's code), and it sits at the end of the ranked row.
        found = int((row >= 0).sum())
        if found == 0:
            continue
        shortlist = row[:found]
        order = rerank_shortlist(
            rerank,
            queries[i : i + 1],
            shortlist[None],
            lambda chosen: np.asarray(codes[chosen], dtype=np.float32),
            **(rerank_params or {}),
        )[0][:k]
        # The step returns ids, not positions: find each one's place in the shortlist for its distance.
        by_id = np.argsort(shortlist, kind="stable")
        positions = by_id[np.searchsorted(shortlist[by_id], order)]
        out_ids[i, : len(order)] = order
        out_distances[i, : len(order)] = distances[i, positions]
    return out_ids, out_distances
