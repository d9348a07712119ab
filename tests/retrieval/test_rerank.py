"""Re-ranking against independent references: per-query loops written from the papers, and the
authors' own k-reciprocal ``re_ranking`` (Zhong et al.'s published numpy code, generalised to
leave-one-out), on random float64 codes where no two similarities tie."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from neuralcodes.retrieval.rerank import (
    RERANKERS,
    database_augmentation,
    query_expansion,
    rerank,
    rerank_shortlist,
)


def _codes(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d))
    return centres[rng.integers(0, 4, n)] + 0.7 * rng.normal(size=(n, d))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _naive_qe(q, x, k, alpha, loo):
    q, x = _unit(q), _unit(x)
    out = np.empty((len(q), len(x)))
    for i in range(len(q)):
        sims = [(float(q[i] @ x[j]), j) for j in range(len(x)) if not (loo and j == i)]
        top = sorted(sims, key=lambda t: (-t[0], t[1]))[:k]
        expanded = (
            q[i] + sum((max(s, 0) ** alpha if alpha else 1.0) * x[j] for s, j in top) if k else q[i]
        )
        out[i] = x @ (expanded / np.linalg.norm(expanded))
        if loo:
            out[i, i] = -np.inf
    return out


@pytest.mark.parametrize(
    "k,alpha,loo", [(5, 0.0, False), (5, 3.0, False), (3, 0.0, True), (7, 2.0, True)]
)
def test_query_expansion_matches_a_per_query_loop(k, alpha, loo):
    x = _codes(40)
    q = x if loo else _codes(6, seed=1)
    np.testing.assert_allclose(
        query_expansion(q, x, k, alpha, loo), _naive_qe(q, x, k, alpha, loo), atol=1e-12
    )


def test_query_expansion_with_k_0_is_plain_cosine():
    x, q = _codes(30), _codes(5, seed=2)
    np.testing.assert_allclose(query_expansion(q, x, k=0), _unit(q) @ _unit(x).T, atol=1e-12)


@pytest.mark.parametrize("k,alpha", [(1, 0.0), (4, 0.0), (6, 3.0)])
def test_database_augmentation_matches_a_per_item_loop(k, alpha):
    x = _unit(_codes(30))
    expected = np.empty_like(x)
    for i in range(len(x)):
        others = sorted(
            ((float(x[i] @ x[j]), j) for j in range(len(x)) if j != i), key=lambda t: (-t[0], t[1])
        )
        members = [(1.0, i)] + others[: k - 1]
        mean = sum((max(s, 0) ** alpha if alpha else 1.0) * x[j] for s, j in members)
        expected[i] = mean / np.linalg.norm(mean)
    np.testing.assert_allclose(database_augmentation(x, k, alpha), expected, atol=1e-12)


def _naive_diffusion_order(q, x, i, k, n_truncate, k_query, gamma, alpha, loo):
    q, x = _unit(q), _unit(x)
    n = len(x)
    s_xx = x @ x.T
    np.fill_diagonal(s_xx, -np.inf)
    knn = [set(np.argsort(-s_xx[j], kind="stable")[:k]) for j in range(n)]
    a = np.zeros((n, n))
    for u in range(n):
        for v in range(n):
            if v in knn[u] and u in knn[v]:
                a[u, v] = max(s_xx[u, v], 0) ** gamma
    s = x @ q[i]
    if loo:
        s[i] = -np.inf
    by_sim = sorted(range(n), key=lambda j: (-s[j], j))
    t = by_sim[: min(n_truncate, n - (1 if loo else 0))]
    sub = a[np.ix_(t, t)]
    deg = sub.sum(axis=1)
    inv = np.array([1 / np.sqrt(dg) if dg > 0 else 0.0 for dg in deg])
    y = np.array([max(s[j], 0) ** gamma if r < k_query else 0.0 for r, j in enumerate(t)])
    f = np.linalg.solve(np.eye(len(t)) - alpha * inv[:, None] * sub * inv[None, :], y)
    f[np.abs(f) < 1e-12] = (
        0  # items the query's seeds cannot reach: exactly 0, tied, ordered by similarity
    )
    inside = sorted(range(len(t)), key=lambda r: (-round(f[r], 9), -s[t[r]]))
    return [t[r] for r in inside] + [j for j in by_sim if j not in t and not (loo and j == i)]


@pytest.mark.parametrize("loo,n_truncate", [(False, 25), (True, 25), (False, 1000)])
def test_diffusion_ranks_as_a_dense_solve_does(loo, n_truncate):
    x = _codes(40)
    q = x[:5] if loo else _codes(4, seed=3)
    params = dict(k=6, n_truncate=n_truncate, k_query=4, gamma=3.0, alpha=0.9)
    scores = rerank(
        "diffusion", q if not loo else x, x, loo=loo, tol=1e-14, max_iter=1000, **params
    )
    for i in range(len(q)):
        got = [int(j) for j in np.argsort(-scores[i], kind="stable") if np.isfinite(scores[i, j])]
        assert got == _naive_diffusion_order(q if not loo else x, x, i, loo=loo, **params)


def _authors_re_ranking(
    all_dist: np.ndarray, query_num: int, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Zhong et al.'s ``re_ranking`` (github.com/zhunzhong07/person-re-ranking), in float64, on the
    (P, P) Euclidean distances of all points, the first ``query_num`` being the queries."""
    original_dist = np.power(all_dist, 2)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    v = np.zeros_like(original_dist)
    initial_rank = np.argsort(original_dist, kind="stable")
    all_num = original_dist.shape[0]
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        for candidate in k_reciprocal_index:
            half = int(np.around(k1 / 2.0))
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal_index)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(all_num)])
    inv_index = [np.where(v[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist)
    for i in range(query_num):
        temp_min = np.zeros(all_num)
        non_zero = np.where(v[i, :] != 0)[0]
        for j in non_zero:
            temp_min[inv_index[j]] += np.minimum(v[i, j], v[inv_index[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    return jaccard_dist * (1 - lambda_value) + original_dist * lambda_value


@pytest.mark.parametrize("k1,k2,lambda_", [(6, 3, 0.3), (4, 1, 0.5), (8, 2, 0.0)])
def test_k_reciprocal_matches_the_authors_code(k1, k2, lambda_):
    x, q = _codes(40), _codes(5, seed=4)
    points = _unit(np.concatenate([q, x]))
    expected = _authors_re_ranking(cdist(points, points), len(q), k1, k2, lambda_)[:, len(q) :]
    np.testing.assert_allclose(
        rerank("k_reciprocal", q, x, k1=k1, k2=k2, lambda_=lambda_), -expected, atol=1e-10
    )


def test_k_reciprocal_leave_one_out_matches_the_authors_code_on_the_database_alone():
    x = _unit(_codes(40))
    expected = _authors_re_ranking(cdist(x, x), len(x), 6, 3, 0.3)
    np.fill_diagonal(expected, np.inf)
    np.testing.assert_allclose(
        rerank("k_reciprocal", x, x, loo=True, k1=6, k2=3, lambda_=0.3), -expected, atol=1e-10
    )


def test_k_reciprocal_with_lambda_1_keeps_the_original_ranking():
    x, q = _codes(40), _codes(5, seed=5)
    scores = rerank("k_reciprocal", q, x, lambda_=1.0, k1=5, k2=2)
    np.testing.assert_array_equal(
        np.argsort(-scores, axis=1), np.argsort(-(_unit(q) @ _unit(x).T), axis=1)
    )


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_leave_one_out_never_ranks_a_query_itself_and_reads_no_label(name):
    x = _codes(60)
    scores = rerank(name, x, x, loo=True, **_small(name))
    assert scores.shape == (60, 60)
    assert np.all(np.diag(scores) == -np.inf) and np.isfinite(scores[~np.eye(60, dtype=bool)]).all()
    assert not {"labels", "y", "targets"} & set(inspect.signature(RERANKERS[name].fn).parameters)


def _small(name: str) -> dict:
    return {"diffusion": {"k": 5, "n_truncate": 30}, "k_reciprocal": {"k1": 5, "k2": 2}}.get(
        name, {}
    )


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_rerank_shortlist_is_the_step_run_on_the_shortlist(name):
    x, q = _codes(50), _codes(3, seed=6)
    candidates = np.stack([np.argsort(-(_unit(x) @ _unit(qi)))[:20] for qi in q])
    got = rerank_shortlist(name, q, candidates, lambda ids: x[ids], **_small(name))
    for i in range(len(q)):
        scores = rerank(name, q[i : i + 1], x[candidates[i]], **_small(name))[0]
        np.testing.assert_array_equal(got[i], candidates[i][np.argsort(-scores, kind="stable")])
        assert sorted(got[i]) == sorted(candidates[i])


def test_unknown_step_or_parameter_is_a_clear_error():
    x = _codes(10)
    with pytest.raises(ValueError, match="unknown re-ranking 'qe'.*aqe"):
        rerank("qe", x, x)
    with pytest.raises(ValueError, match="'aqe' has no parameter k1.*alpha, k"):
        rerank("aqe", x, x, k1=3)
    with pytest.raises(ValueError, match="alpha must be in"):
        rerank("diffusion", x, x, alpha=1.0)
    with pytest.raises(ValueError, match="NaN"):
        rerank("aqe", np.full((2, 3), np.nan), x[:, :3])
