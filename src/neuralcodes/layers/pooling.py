"""Global pooling of a convolutional feature map into one vector per image (as cirtorch's layers/pooling.py).

    gem(x, p)   generalised mean (Radenovic, Tolias & Chum, 2018): (mean over positions of x^p)^(1/p)
    spoc(x)     average pooling, the p = 1 case (Babenko & Lempitsky, 2015)
    mac(x)      max pooling, the p -> infinity limit (Tolias et al., 2016)

Feature maps are (B, C, H, W) and non-negative (they follow a ReLU); every function returns (B, C).
:class:`GeM` is the module, with p learnable (initialised at 3, cirtorch's default) or fixed.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_P = 3.0
DEFAULT_EPS = 1e-6
POOLINGS = ("mac", "spoc", "gem")


def _check_map(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"pooling expects a torch tensor, got {type(x).__name__}; use torch.from_numpy(x)"
        )
    if x.ndim != 4:
        raise ValueError(
            f"pooling expects a (batch, channels, height, width) feature map, got shape {tuple(x.shape)}"
        )


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # bf16 / fp16 maps (autocast) pool in float32: x^p at low precision loses too much for large p.
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def gem(
    x: torch.Tensor, p: float | torch.Tensor = DEFAULT_P, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Generalised-mean pooling; ``p`` a number or a (1,) tensor (its gradient flows)."""
    _check_map(x)
    # A number is checked here (a tensor p is learned and kept positive by its module): p = 0 divided
    # by zero, a negative p pooled towards the minimum without a word.
    if not isinstance(p, torch.Tensor) and not p > 0:
        raise ValueError(f"the GeM power p must be positive, got {p}")
    # Clamping keeps x^p and its gradient finite for fractional p (a ReLU map has exact zeros).
    pooled = _upcast(x).clamp(min=eps).pow(p).mean(dim=(-2, -1))
    return pooled.pow(1.0 / p)


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum-pooled convolutional features (average pooling): ``gem`` at p = 1."""
    _check_map(x)
    return _upcast(x).mean(dim=(-2, -1))


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: ``gem`` as p -> infinity."""
    _check_map(x)
    return _upcast(x).amax(dim=(-2, -1))


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable (``learn_p=True``) or fixed power ``p``."""

    def __init__(
        self, p: float = DEFAULT_P, learn_p: bool = True, eps: float = DEFAULT_EPS
    ) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"the GeM power p must be positive, got {p}")
        value = torch.tensor([float(p)])
        if learn_p:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4f}, learn_p={isinstance(self.p, nn.Parameter)}, eps={self.eps}"


class MAC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mac(x)


class SPoC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spoc(x)


def build_pooling(name: str, p: float = DEFAULT_P, learn_p: bool = False) -> nn.Module:
    """``mac``, ``spoc`` or ``gem`` (with power ``p``, learnable if ``learn_p``) as a module."""
    if name == "mac":
        return MAC()
    if name == "spoc":
        return SPoC()
    if name == "gem":
        return GeM(p, learn_p=learn_p)
    raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
