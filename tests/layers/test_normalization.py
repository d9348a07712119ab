import numpy as np
import pytest
import torch

from neuralcodes.layers.normalization import L2N, l2n


def test_l2n_matches_numpy_division_by_norm():
    x = torch.randn(6, 10, dtype=torch.float64)
    expected = x.numpy() / np.sqrt((x.numpy() ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(l2n(x).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(torch.linalg.vector_norm(l2n(x), dim=1).numpy(), 1.0, rtol=1e-12)


def test_l2n_along_another_dim():
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    expected = x.numpy() / np.linalg.norm(x.numpy(), axis=2, keepdims=True)
    np.testing.assert_allclose(l2n(x, dim=2).numpy(), expected, rtol=1e-12)


def test_zero_code_stays_zero_without_nan_and_with_finite_gradient():
    x = torch.randn(4, 8)
    x[2] = 0.0
    x.requires_grad_(True)
    y = l2n(x)
    assert torch.equal(y[2], torch.zeros(8))
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_module_equals_function_and_repr():
    x = torch.randn(5, 7)
    module = L2N(eps=1e-9)
    torch.testing.assert_close(module(x), l2n(x, eps=1e-9))
    assert "eps=1e-09" in repr(module)


def test_non_positive_eps_is_rejected():
    with pytest.raises(ValueError, match="eps must be positive"):
        l2n(torch.ones(2, 2), eps=0.0)
