"""The one eigen-decomposition behind PCA and PCA-whitening: both routes, fixed signs, numerical rank."""

import numpy as np
import pytest
import torch

from neuralcodes.layers.eigen import descending_eigh, numerical_rank, principal_axes
from neuralcodes.layers.whitening import eigenbasis, pca_whitening


def codes(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = (
        rng.standard_normal((n, d)) * np.linspace(2.0, 0.1, d) + 3.0
    )  # unequal variances, off-centre
    return torch.from_numpy(x.astype(np.float32)).double()


def test_the_gram_route_gives_the_covariance_routes_axes():
    x = codes(30, 80)  # N <= D: the Gram route; 29 directions after centring
    gram, full = principal_axes(x, complete=False), principal_axes(x, complete=True)
    assert (
        gram.rank == full.rank == 29
        and gram.vectors.shape == (80, 29)
        and full.vectors.shape == (80, 80)
    )
    torch.testing.assert_close(gram.values, full.values[:29], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        gram.vectors, full.vectors[:, :29], rtol=0, atol=1e-8
    )  # same signs, no flips
    assert torch.equal(gram.mean, full.mean)


def test_a_truncated_basis_of_many_codes_is_the_complete_one_cut_at_the_rank():
    x = codes(200, 12, seed=1)  # N > D: both routes decompose the covariance
    cut, full = principal_axes(x, complete=False), principal_axes(x, complete=True)
    assert cut.rank == 12
    assert torch.equal(cut.vectors, full.vectors) and torch.equal(cut.values, full.values)
    np.testing.assert_allclose(
        cut.values.numpy(), np.linalg.eigvalsh(np.cov(x.numpy().T))[::-1], rtol=1e-10
    )


def test_signs_are_fixed_and_values_descend():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 6))
    values, vectors = descending_eigh(torch.from_numpy(a @ a.T))
    assert bool((values[:-1] >= values[1:]).all())
    largest = vectors.abs().argmax(dim=0)
    assert bool((vectors[largest, torch.arange(6)] > 0).all())
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(6, dtype=vectors.dtype))
    for basis in (principal_axes(codes(10, 40), complete=False), principal_axes(codes(10, 40))):
        top = basis.vectors.abs().argmax(dim=0)
        assert bool((basis.vectors[top, torch.arange(basis.vectors.shape[1])] > 0).all())


def test_numerical_rank_counts_the_directions_float32_codes_resolve():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(
        (rng.standard_normal((50, 4)) @ rng.standard_normal((4, 20))).astype(np.float32)
    ).double()
    assert principal_axes(x).rank == principal_axes(x, complete=False).rank == 4
    assert numerical_rank(torch.tensor([1.0, 1e-20, 0.0]), (5, 5)) == 1
    assert numerical_rank(torch.zeros(3), (5, 5)) == 1  # at least one, even for constant codes


def test_whitening_refuses_a_truncated_basis():
    x = codes(10, 40)
    assert eigenbasis(x).vectors.shape == (40, 40)
    with pytest.raises(ValueError, match="all the codes' directions"):
        pca_whitening(principal_axes(x, complete=False), dim=5)
