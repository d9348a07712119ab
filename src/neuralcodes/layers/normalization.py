"""L2 normalisation of codes: the last step before codes are compared by Euclidean distance.

Unlike the ``x / (norm + eps)`` form, dividing by ``max(norm, eps)`` keeps unit codes exactly at
unit length and maps an all-zero code (a dead ReLU layer, a blank image) to zero instead of NaN.
"""
from __future__ import annotations

import torch
from torch import nn


def l2n(x: torch.Tensor, eps: float = 1e-12, dim: int = 1) -> torch.Tensor:
    """``x`` divided by its L2 norm along ``dim``; a vector with norm below ``eps`` stays (near) zero."""
    if eps <= 0:
        raise ValueError(f"eps must be positive (got {eps}); it is what keeps an all-zero code from becoming NaN")
    norm = torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True)
    return x / norm.clamp_min(eps)


class L2N(nn.Module):
    """Module form of :func:`l2n`, to end a network that outputs codes."""

    def __init__(self, eps: float = 1e-12, dim: int = 1) -> None:
        super().__init__()
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(x, eps=self.eps, dim=self.dim)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps}, dim={self.dim})"
