"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), following the authors' ``re_ranking``.

Over the point set P (the queries and the database; leave-one-out: the database alone, query i being
item i), with original distance d = |a - b|^2 of unit codes, each row divided by its maximum:
the k-reciprocal neighbours R(p, k1) are those of p's k1 + 1 nearest that have p among their own
k1 + 1 nearest; R is expanded by each member's R(c, round(k1 / 2)) that shares more than 2/3 of itself
with R(p, k1); p's neighbourhood vector V_p holds exp(-d) over the expanded set, summed to 1, and is
averaged over p's k2 nearest (local query expansion). The final distance is
lambda * d + (1 - lambda) * Jaccard(V_p, V_g), with Jaccard = 1 - m / (2 - m), m = sum min(V_p, V_g).
Uses the unlabelled database's structure (neighbours of neighbours), never a label.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from neuralcodes.retrieval.neighbours import normalised, similarities, top_k


def _reciprocal(nearest: np.ndarray, p: int, k: int) -> np.ndarray:
    forward = nearest[p, : k + 1]
    return forward[(nearest[forward, : k + 1] == p).any(axis=1)]


def neighbourhoods(d: np.ndarray, nearest: np.ndarray, k1: int) -> sp.csr_matrix:
    """(P, P) sparse V: each point's weights over its expanded k-reciprocal set (rows sum to 1)."""
    half = int(np.around(k1 / 2))
    rows, cols, vals = [], [], []
    for p in range(d.shape[0]):
        r = _reciprocal(nearest, p, k1)
        expanded = [r]
        for c in r:
            rc = _reciprocal(nearest, c, half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded.append(rc)
        members = np.unique(np.concatenate(expanded))
        w = np.exp(-d[p, members])
        rows.append(np.full(len(members), p)), cols.append(members), vals.append(w / w.sum())
    n = d.shape[0]
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def jaccard(v: sp.csr_matrix, queries: np.ndarray) -> np.ndarray:
    """(len(queries), P) Jaccard distances 1 - m / (2 - m), m = sum_k min(V_q,k, V_g,k), from the sparse V."""
    by_column = v.tocsc()
    out = np.empty((len(queries), v.shape[0]))
    for row, qi in enumerate(queries):
        start, end = v.indptr[qi], v.indptr[qi + 1]
        cols, vq = v.indices[start:end], v.data[start:end]
        shared = by_column[
            :, cols
        ]  # the points sharing a neighbour with the query, per shared neighbour
        shared.data = np.minimum(shared.data, np.repeat(vq, np.diff(shared.indptr)))
        m = np.asarray(shared.sum(axis=1)).ravel()
        out[row] = 1 - m / (2 - m)
    return out


def k_reciprocal(
    q: np.ndarray, x: np.ndarray, k1: int = 20, k2: int = 6, lambda_: float = 0.3, loo: bool = False
) -> np.ndarray:
    """(Q, N) scores (minus the re-ranked distance) of each query against the database (see the module doc)."""
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k-reciprocal's k1 and k2 must be at least 1, got k1={k1}, k2={k2}")
    if not 0 <= lambda_ <= 1:
        raise ValueError(f"k-reciprocal's lambda_ must be in [0, 1], got {lambda_}")
    q, x = normalised(q), normalised(x)
    points = x if loo else np.concatenate([q, x])
    d = np.maximum(2 - 2 * similarities(points, points), 0)
    np.fill_diagonal(d, 0)
    d = d / np.maximum(d.max(axis=1, keepdims=True), np.finfo(d.dtype).tiny)
    nearest = top_k(-d, max(k1 + 1, k2))  # each point is its own nearest, at distance 0
    v = neighbourhoods(d, nearest, k1)
    if k2 != 1:  # local query expansion: V_p becomes the mean of V over p's k2 nearest
        near = nearest[:, :k2]
        mean = sp.csr_matrix(
            (
                np.full(near.size, 1 / near.shape[1]),
                (np.repeat(np.arange(len(d)), near.shape[1]), near.ravel()),
            ),
            shape=d.shape,
        )
        v = sp.csr_matrix(mean @ v)
    queries = np.arange(len(x)) if loo else np.arange(len(q))
    gallery = slice(0, len(x)) if loo else slice(len(q), len(points))
    final = (1 - lambda_) * jaccard(v, queries)[:, gallery] + lambda_ * d[queries][:, gallery]
    scores = -final
    if loo:
        np.fill_diagonal(scores, -np.inf)
    return scores
