"""Cosine neighbours for the re-ranking steps: normalised codes, similarity blocks and top-k by similarity.

Re-ranking works on similarities (higher is nearer) of L2-normalised codes, as cirtorch does: for unit
codes the Euclidean ranking of :mod:`neuralcodes.retrieval.search` and the cosine ranking are the same.
Leave-one-out (``loo``): the queries are the database, and a query's own item scores ``-inf`` so that no
step takes it for a neighbour of itself.
"""

from __future__ import annotations

import numpy as np


def normalised(x: np.ndarray) -> np.ndarray:
    """(N, D) codes scaled to unit length, in float32 or float64 (all-zero rows stay zero)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"codes must be a (N, D) array, got shape {x.shape}")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    if not np.isfinite(x).all():
        raise ValueError(
            "codes hold NaN or infinite values: re-extract them (a diverged network gives such codes)"
        )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def similarities(q: np.ndarray, x: np.ndarray, loo: bool = False) -> np.ndarray:
    """(Q, N) cosine similarities of unit codes; with ``loo``, each query's own item is ``-inf``."""
    if loo and q.shape[0] != x.shape[0]:
        raise ValueError(
            f"leave-one-out needs the queries to be the database, got {q.shape[0]} and {x.shape[0]} codes"
        )
    s = q @ x.T
    if loo:
        np.fill_diagonal(s, -np.inf)
    return s


def top_k(s: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) indices of each row's k largest values, largest first, ties by index (as a stable sort)."""
    k = min(k, s.shape[1])
    if k <= 0:
        return np.empty((s.shape[0], 0), dtype=np.int64)
    if k < s.shape[1]:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
    vals = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def weights(s: np.ndarray, alpha: float) -> np.ndarray:
    """alpha-QE's weights: similarity^alpha, negatives clipped to 0; alpha = 0 weighs every neighbour 1."""
    return np.ones_like(s) if alpha == 0 else np.maximum(s, 0) ** alpha


def ranking(scores: np.ndarray) -> np.ndarray:
    """(Q, N) database indices by descending score, ties by index."""
    return np.argsort(-scores, axis=1, kind="stable")
