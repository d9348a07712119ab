"""Whitening against scikit-learn's PCA and scipy's generalised eigenproblem, and the properties that define it."""

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.decomposition import PCA

from neuralcodes.layers.whitening import eigenbasis, learned_whitening, pca_whitening, whiten


def correlated_codes(n=400, d=12, n_classes=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(0, 2, (n_classes, d))
    mixing = rng.normal(0, 1, (d, d)) * np.logspace(0, -2, d)  # strongly unequal variances
    x = centres[labels] + rng.normal(0, 1, (n, d)) @ mixing + 5.0
    return x.astype(np.float32), labels


def apply(layer, x):
    with torch.no_grad():
        return layer(torch.as_tensor(x)).double().numpy()


def test_pca_whitening_gives_identity_covariance_on_its_fitting_codes():
    x, _ = correlated_codes()
    y = apply(pca_whitening(x), x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(x.shape[1]), atol=2e-3)


def test_pca_whitening_equals_sklearn_up_to_component_signs():
    x, _ = correlated_codes(seed=1)
    ours = apply(pca_whitening(x, dim=5), x)
    reference = (
        PCA(n_components=5, whiten=True, svd_solver="full").fit(x.astype(np.float64)).transform(x)
    )
    signs = np.sign((ours * reference).sum(axis=0))
    np.testing.assert_allclose(ours * signs, reference, atol=2e-3)


@pytest.mark.parametrize("dim,power,shrinkage", [(None, 0.5, 0.0), (5, 0.25, 0.1), (12, 0.5, 0.5)])
def test_a_whitening_from_a_precomputed_eigenbasis_is_the_same_layer(dim, power, shrinkage):
    x, _ = correlated_codes(seed=3)
    basis = eigenbasis(x)
    np.testing.assert_array_equal(
        apply(pca_whitening(basis, dim, power, shrinkage), x),
        apply(pca_whitening(x, dim, power, shrinkage), x),
    )
    with pytest.raises(ValueError, match="span only"):
        pca_whitening(eigenbasis(x[:6]), dim=8)  # 6 codes: rank 5, checked against the fitted shape


def test_shrinkage_and_power_tame_the_smallest_eigenvalues():
    x, _ = correlated_codes(seed=2)
    full = pca_whitening(x).weight.norm(dim=1)
    shrunk = pca_whitening(x, shrinkage=0.5).weight.norm(dim=1)
    partial = pca_whitening(x, power=0.25).weight.norm(dim=1)
    # The last component's gain is what blows noise up; both regularisations cut it.
    assert shrunk[-1] < full[-1] / 3 and partial[-1] < full[-1] / 3
    assert (
        pca_whitening(x, power=0.0).weight.norm(dim=1).allclose(torch.ones(x.shape[1]), atol=1e-5)
    )  # a pure rotation


def test_learned_whitening_whitens_matching_differences_and_decorrelates_the_codes():
    x, labels = correlated_codes(seed=3)
    layer = learned_whitening(x, labels)
    y = apply(layer, x)
    same = [
        (i, j) for i in range(len(x)) for j in range(len(x)) if i != j and labels[i] == labels[j]
    ]
    q, p = np.array(same).T
    diff = y[q] - y[p]
    np.testing.assert_allclose(diff.T @ diff / len(diff), np.eye(x.shape[1]), atol=2e-3)
    cov = np.cov(y.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=2e-3)
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)  # ordered by decreasing between-class spread


def test_learned_whitening_solves_the_generalised_eigenproblem_and_pairs_agree_with_labels():
    x, labels = correlated_codes(n=120, seed=4)
    xd = x.astype(np.float64)
    same = np.array(
        [(i, j) for i in range(len(x)) for j in range(len(x)) if i != j and labels[i] == labels[j]]
    )
    diff = xd[same[:, 0]] - xd[same[:, 1]]
    cs = diff.T @ diff / len(diff)
    _, vectors = scipy.linalg.eigh(np.cov(xd.T), cs)  # v^T Cs v = 1, ascending
    reference = vectors[:, ::-1].T
    for layer in (
        learned_whitening(x, labels),
        learned_whitening(x, pairs=(same[:, 0], same[:, 1])),
    ):
        w = layer.weight.detach().double().numpy()
        signs = np.sign((w * reference).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(
            w * signs, reference, rtol=2e-3, atol=2e-3 * np.abs(reference).max()
        )


def test_the_same_transform_serves_queries_and_database():
    x, labels = correlated_codes(seed=5)
    queries, database = x[:50], x[50:]
    for layer in (pca_whitening(x[:300], dim=8), learned_whitening(x[:300], labels[:300], dim=8)):
        together = whiten(layer, np.concatenate([queries, database]))
        np.testing.assert_array_equal(
            np.concatenate([whiten(layer, queries), whiten(layer, database)]), together
        )
        np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
        # Nothing of the evaluated set is read: refitting on the queries would give other codes.
        assert not np.allclose(
            whiten(pca_whitening(queries, dim=8), queries), together[:50], atol=1e-3
        )


def test_a_whitening_layer_is_trainable_end_to_end():
    x, labels = correlated_codes(seed=6)
    layer = learned_whitening(x, labels, dim=4)
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (4, x.shape[1])
    layer(torch.as_tensor(x)).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_rank_deficient_codes_need_shrinkage_and_singular_pairs_are_explained():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 10)).astype(np.float32)
    with pytest.raises(ValueError, match="shrinkage above 0"):
        pca_whitening(x, dim=8)
    assert pca_whitening(x, dim=8, shrinkage=0.1).weight.shape == (8, 10)
    with pytest.raises(ValueError, match="singular"):
        learned_whitening(x, np.array([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        learned_whitening(x)
