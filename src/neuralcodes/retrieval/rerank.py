"""Re-ranking: the post-processing steps of the cirtorch line of work, on any codes.

Every step maps (queries, database) codes to a (Q, N) score matrix, higher is nearer, and reads no
label. ``loo=True`` is leave-one-out (the queries are the database): a query never scores itself
(``-inf``) and never takes itself for one of its own neighbours; database-side steps treat it as an
ordinary unlabelled database item for the *other* queries, as an index that holds the query image does.

    aqe / alpha_qe   query expansion: the query averaged with its top k, weighted by similarity^alpha
    dba              database-side augmentation: each database code averaged with its own top k
    dba+qe           query expansion against the augmented database
    diffusion        Iscen et al. 2017, truncated (retrieval/diffusion.py)
    k_reciprocal     Zhong et al. 2017 (retrieval/k_reciprocal.py)

``uses_database`` marks the steps that read the unlabelled database's own structure (beyond the
query's results), as the comparison tables do. Large databases: :func:`rerank_shortlist` re-ranks each
query's first results (from an index) among themselves.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from neuralcodes.retrieval.diffusion import diffusion
from neuralcodes.retrieval.k_reciprocal import k_reciprocal
from neuralcodes.retrieval.neighbours import normalised, ranking, similarities, top_k, weights

__all__ = [
    "RERANKERS",
    "Reranker",
    "database_augmentation",
    "diffusion",
    "k_reciprocal",
    "query_expansion",
    "rerank",
    "rerank_shortlist",
    "ranking",
]


def query_expansion(
    q: np.ndarray, x: np.ndarray, k: int = 10, alpha: float = 0.0, loo: bool = False
) -> np.ndarray:
    """(Q, N) scores of the expanded queries: normalise(q + sum over q's top k of similarity^alpha * x_j);
    alpha = 0 is average query expansion, k = 0 the plain cosine scores."""
    _at_least(k, 0, "k")
    q, x = normalised(q), normalised(x)
    s = similarities(q, x, loo)
    if k:
        nn = top_k(s, k)
        w = weights(np.take_along_axis(s, nn, axis=1), alpha)
        s = similarities(normalised(q + np.einsum("qk,qkd->qd", w, x[nn])), x, loo)
    return s


def database_augmentation(x: np.ndarray, k: int = 10, alpha: float = 0.0) -> np.ndarray:
    """(N, D) unit codes, each the similarity^alpha-weighted mean of its k nearest, itself included
    (k = 0 or 1: the codes unchanged)."""
    _at_least(k, 0, "k")
    x = normalised(x)
    if k <= 1:
        return x
    s = similarities(x, x)
    np.fill_diagonal(s, np.inf)  # itself first, whatever rounding does to x.x
    nn = top_k(s, k)
    np.fill_diagonal(s, 1.0)
    w = weights(np.take_along_axis(s, nn, axis=1), alpha)
    return normalised(np.einsum("nk,nkd->nd", w, x[nn]))


def _dba(
    q: np.ndarray, x: np.ndarray, k: int = 10, alpha: float = 0.0, loo: bool = False
) -> np.ndarray:
    return similarities(normalised(q), database_augmentation(x, k, alpha), loo)


def _dba_qe(
    q: np.ndarray,
    x: np.ndarray,
    k_dba: int = 10,
    alpha_dba: float = 0.0,
    k_qe: int = 10,
    alpha_qe: float = 0.0,
    loo: bool = False,
) -> np.ndarray:
    return query_expansion(q, database_augmentation(x, k_dba, alpha_dba), k_qe, alpha_qe, loo)


@dataclass(frozen=True)
class Reranker:
    """A named re-ranking step: its function, default parameters, and whether it reads the database's structure."""

    fn: Callable[..., np.ndarray]
    uses_database: bool
    defaults: dict[str, Any] = field(default_factory=dict)
    about: str = ""


RERANKERS: dict[str, Reranker] = {
    "aqe": Reranker(query_expansion, False, {"k": 10, "alpha": 0.0}, "average query expansion"),
    "alpha_qe": Reranker(
        query_expansion, False, {"k": 10, "alpha": 3.0}, "alpha-weighted query expansion"
    ),
    "dba": Reranker(_dba, True, {"k": 10, "alpha": 0.0}, "database-side augmentation"),
    "dba+qe": Reranker(
        _dba_qe,
        True,
        {"k_dba": 10, "alpha_dba": 0.0, "k_qe": 10, "alpha_qe": 0.0},
        "query expansion against the augmented database",
    ),
    "diffusion": Reranker(
        diffusion,
        True,
        {"k": 50, "n_truncate": 1000, "k_query": 10, "gamma": 3.0, "alpha": 0.99},
        "diffusion on the mutual kNN graph (Iscen et al. 2017)",
    ),
    "k_reciprocal": Reranker(
        k_reciprocal,
        True,
        {"k1": 20, "k2": 6, "lambda_": 0.3},
        "k-reciprocal re-ranking (Zhong et al. 2017)",
    ),
}


def parameters(name: str, **params: Any) -> dict[str, Any]:
    """The step's defaults updated by ``params``; a clear error for an unknown step or parameter."""
    if name not in RERANKERS:
        raise ValueError(f"unknown re-ranking {name!r}; choose one of {', '.join(RERANKERS)}")
    step = RERANKERS[name]
    accepted = set(inspect.signature(step.fn).parameters) - {"q", "x", "loo"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"re-ranking {name!r} has no parameter {', '.join(unknown)}; its parameters: "
            f"{', '.join(sorted(accepted))}"
        )
    return {**step.defaults, **params}


def rerank(name: str, q: np.ndarray, x: np.ndarray, loo: bool = False, **params: Any) -> np.ndarray:
    """(Q, N) scores of the named step (defaults updated by ``params``)."""
    params = parameters(name, **params)
    return RERANKERS[name].fn(q, x, loo=loo, **params)


def rerank_shortlist(
    name: str,
    q: np.ndarray,
    candidates: np.ndarray,
    candidate_codes: Callable[[np.ndarray], np.ndarray],
    **params: Any,
) -> np.ndarray:
    """(Q, n) each query's shortlist ``candidates`` (database ids from a search) re-ordered by the named step
    run on the shortlist alone; ``candidate_codes(ids)`` gives the codes of some ids (from an index)."""
    params = parameters(name, **params)
    out = np.empty_like(candidates)
    for i, ids in enumerate(candidates):
        scores = RERANKERS[name].fn(q[i : i + 1], candidate_codes(ids), loo=False, **params)[0]
        out[i] = ids[ranking(scores[None])[0]]
    return out


def _at_least(value: int, low: int, name: str) -> None:
    if value < low:
        raise ValueError(f"re-ranking's {name} must be at least {low}, got {value}")
