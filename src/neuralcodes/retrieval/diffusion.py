"""Diffusion on the mutual k-nearest-neighbour graph (Iscen et al., CVPR 2017), truncated as they do.

The database's affinity graph keeps an edge i-j only when each is among the other's ``k`` nearest
(a_ij = s_ij^gamma, negatives clipped). Per query, the graph is cut down to the query's ``n_truncate``
nearest items T (the truncation that makes it scale), normalised symmetrically (S = D^-1/2 A D^-1/2), and
the query's similarities to its ``k_query`` nearest (^gamma) are diffused by solving (I - alpha S) f = y
with conjugate gradient. T is ranked by f (ties by similarity), then the rest of the database by
similarity. Uses the unlabelled database's structure (its graph), never a label.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from neuralcodes.retrieval.neighbours import normalised, similarities, top_k


def mutual_knn_graph(x: np.ndarray, k: int, gamma: float) -> sp.csr_matrix:
    """(N, N) sparse affinities of unit codes ``x``: s^gamma between mutual k-nearest neighbours."""
    n = x.shape[0]
    s = similarities(x, x, loo=True)  # an item is not its own neighbour
    nn = top_k(s, k)
    rows = np.repeat(np.arange(n), nn.shape[1])
    knn = sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, nn.ravel())), shape=(n, n))
    mutual = knn.multiply(knn.T).tocoo()
    a = np.maximum(s[mutual.row, mutual.col], 0) ** gamma
    return sp.csr_matrix((a, (mutual.row, mutual.col)), shape=(n, n))


def diffuse(a: sp.csr_matrix, y: np.ndarray, alpha: float, tol: float, max_iter: int) -> np.ndarray:
    """f solving (I - alpha D^-1/2 A D^-1/2) f = y (symmetric positive definite for alpha < 1)."""
    degree = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    s = sp.diags(inv_sqrt) @ a @ sp.diags(inv_sqrt)
    system = sp.identity(a.shape[0], format="csr") - alpha * s
    f, _ = cg(system, y, rtol=tol, maxiter=max_iter)
    return f


def diffusion(
    q: np.ndarray,
    x: np.ndarray,
    k: int = 50,
    n_truncate: int = 1000,
    k_query: int = 10,
    gamma: float = 3.0,
    alpha: float = 0.99,
    loo: bool = False,
    tol: float = 1e-8,
    max_iter: int = 100,
) -> np.ndarray:
    """(Q, N) scores ranking each query's database by diffusion (see the module doc)."""
    if not 0 <= alpha < 1:
        raise ValueError(
            f"diffusion's alpha must be in [0, 1) (the system is then positive definite), got {alpha}"
        )
    q, x = normalised(q), normalised(x)
    s = similarities(q, x, loo)
    graph = mutual_knn_graph(x, k, gamma)
    available = x.shape[0] - (1 if loo else 0)
    truncated = top_k(s, min(n_truncate, available))
    scores = np.empty_like(s)
    for i, t in enumerate(truncated):
        y = np.zeros(len(t))
        y[:k_query] = (
            np.maximum(s[i, t[:k_query]], 0) ** gamma
        )  # t is sorted: its first are the query's nearest
        f = diffuse(graph[t][:, t], y, alpha, tol, max_iter)
        inside = t[np.lexsort((-s[i, t], -f))]
        outside = np.setdiff1d(np.arange(x.shape[0]), t, assume_unique=True)
        outside = outside[np.lexsort((outside, -s[i, outside]))]
        order = np.concatenate([inside, outside])
        scores[i, order] = -np.arange(
            len(order), dtype=scores.dtype
        )  # the rank as a score: higher is nearer
        if loo:
            scores[i, i] = -np.inf
    return scores
