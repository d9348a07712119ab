"""GeM, MAC and SPoC against naive per-channel loops, and the gradient that reaches p."""

import numpy as np
import pytest
import torch

from neuralcodes.layers.pooling import GeM, build_pooling, gem, mac, spoc


def random_maps(seed: int = 0, shape=(3, 5, 7, 6)) -> torch.Tensor:
    # A ReLU output: non-negative, with some exact zeros.
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g, dtype=torch.float64) + 0.3)


def naive_gem(x: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    out = np.empty(x.shape[:2])
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            values = [max(float(v), eps) ** p for v in x[b, c].ravel()]
            out[b, c] = (sum(values) / len(values)) ** (1 / p)
    return out


@pytest.mark.parametrize("p", [1.0, 2.5, 3.0, 7.0])
def test_gem_matches_a_per_channel_loop(p):
    x = random_maps()
    np.testing.assert_allclose(gem(x, p).double().numpy(), naive_gem(x.numpy(), p), rtol=1e-5)


def test_gem_at_p_1_is_spoc_and_spoc_is_the_channel_mean():
    x = random_maps(1) + 1e-3  # above the clamp, so p = 1 is exactly the mean
    np.testing.assert_allclose(gem(x, 1.0).numpy(), spoc(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(spoc(x).numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-6)


def test_gem_approaches_mac_from_below_as_p_grows():
    x = random_maps(2)
    x = 0.5 + x / x.max()  # float64 in [0.5, 1.5]: x^p stays representable up to p = 1000
    m = mac(x).double()
    np.testing.assert_allclose(m.numpy(), x.numpy().max(axis=(2, 3)), rtol=1e-6)
    n_positions = x.shape[2] * x.shape[3]
    previous_gap = None
    for p in (3.0, 10.0, 50.0, 200.0, 1000.0):
        g = gem(x, p).double()
        # Power-mean bounds: max * N^(-1/p) <= GeM_p <= max.
        assert torch.all(g <= m * (1 + 1e-5))
        assert torch.all(g >= m * n_positions ** (-1 / p) * (1 - 1e-5))
        gap = float(((m - g) / m).max())
        assert previous_gap is None or gap < previous_gap
        previous_gap = gap
    assert previous_gap < 0.005


def test_gradient_reaches_p_and_matches_finite_differences():
    x = random_maps(3).float()
    layer = GeM(p=3.0, learn_p=True)
    layer(x).sum().backward()
    assert (
        layer.p.grad is not None
        and torch.isfinite(layer.p.grad).all()
        and float(layer.p.grad.abs()) > 0
    )
    h = 1e-4
    xd = x.double()
    numeric = (gem(xd, 3.0 + h).sum() - gem(xd, 3.0 - h).sum()) / (2 * h)
    assert float(layer.p.grad) == pytest.approx(float(numeric), rel=1e-3)


def test_fixed_p_is_a_buffer_not_a_parameter():
    layer = GeM(p=3.0, learn_p=False)
    assert list(layer.parameters()) == []
    assert "p" in layer.state_dict()
    assert isinstance(build_pooling("gem", 2.0, learn_p=True).p, torch.nn.Parameter)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="feature map"):
        gem(torch.ones(2, 3))
    with pytest.raises(ValueError, match="positive"):
        GeM(p=0)
    with pytest.raises(ValueError, match="mac, spoc, gem"):
        build_pooling("max")


def test_functional_gem_refuses_a_power_that_is_not_positive_and_numpy_maps():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="p must be positive, got 0"):
        gem(x, p=0)  # was a ZeroDivisionError
    with pytest.raises(ValueError, match="p must be positive, got -1"):
        gem(x, p=-1)  # was pooled towards the minimum silently
    with pytest.raises(
        TypeError, match=r"pooling expects a torch tensor, got ndarray; use torch.from_numpy"
    ):
        mac(x.numpy())  # was "'numpy.ndarray' object has no attribute 'amax'"
