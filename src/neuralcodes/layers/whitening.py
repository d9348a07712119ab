"""Whitening of pooled codes, learned once on in-domain codes and returned as an ``nn.Linear``.

The same layer then transforms queries and database alike (no statistics of the evaluated set
are read), and, placed after the pooling of a network, it fine-tunes end to end (cirtorch).

- :func:`pca_whitening`: centre, rotate onto the principal directions, divide by eigenvalue^power
  (power 0.5 = full whitening). Trailing eigenvalues of codes are tiny and noisy; dividing by them
  blows noise up, so ``shrinkage`` pulls every eigenvalue towards their mean first
  ((1 - s) * lambda + s * mean(lambda)), and a smaller ``power`` whitens only partly.
- :func:`learned_whitening`: the supervised whitening of Radenovic, Tolias & Chum (2018), learned
  from matching (same-class) pairs: whiten the covariance Cs of the matching pairs' differences
  (Cholesky), then rotate onto the principal directions of all codes in that space. Matching
  differences come out with identity covariance: what the retrieval distance should ignore is
  damped, what separates classes is kept.

The eigen-decompositions are :mod:`neuralcodes.layers.eigen`'s (the PCA of :mod:`neuralcodes.retrieval.pca`
too): float64 on the (D, D) covariance, every direction kept (shrinkage reaches past the codes' rank), which
is fine for pooled codes (256-2048 dimensions) and not meant for 16,384-d L5 codes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralcodes.layers.eigen import Eigenbasis, descending_eigh, numerical_rank, principal_axes


def eigenbasis(codes: np.ndarray | torch.Tensor) -> Eigenbasis:
    """Mean and descending covariance eigen-decomposition (all D directions) of (N, D) codes, in float64."""
    return principal_axes(_as_codes(codes), complete=True)


def whitening_shrinkage(n: int, d: int) -> tuple[float, float]:
    """Eigenvalue shrinkage of (PCA, learned) whitening fitted on ``n`` codes of ``d`` dimensions.

    Few codes per dimension: 0.1 for both. Otherwise PCA-whitening keeps only the directions the codes
    span (no shrinkage), while learned whitening still needs 0.01: dead ReLU channels (always 0, as in
    the sample ConvNet's conv5) make the matching-pair covariance singular.
    """
    return (0.1, 0.1) if n <= 2 * d else (0.0, 0.01)


def pca_whitening(
    codes: np.ndarray | torch.Tensor | Eigenbasis,
    dim: int | None = None,
    power: float = 0.5,
    shrinkage: float = 0.0,
) -> nn.Linear:
    """Linear layer ``x -> diag(lambda_reg^-power) U^T (x - mean)`` onto the first ``dim`` components
    (``codes`` may be their :func:`eigenbasis`, computed once for many settings)."""
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    if not 0 <= power <= 1:
        raise ValueError(f"power must lie in [0, 1] (0.5 = full whitening), got {power}")
    basis = codes if isinstance(codes, Eigenbasis) else eigenbasis(codes)
    if (
        basis.vectors.shape[1] != basis.shape[1]
    ):  # shrinkage spreads over, and may reach, every direction
        raise ValueError(
            "PCA-whitening needs all the codes' directions: pass eigenbasis(codes), not a truncated basis"
        )
    dim = _check_dim(dim, basis.rank, basis.shape, shrinkage)
    values = basis.values.clamp_min(0)
    regularised = (1 - shrinkage) * values + shrinkage * values.mean()
    weight = basis.vectors[:, :dim].T / regularised[:dim, None].pow(power)
    return _linear(weight, basis.mean)


def learned_whitening(
    codes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | None = None,
    dim: int | None = None,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    shrinkage: float = 0.0,
) -> nn.Linear:
    """Radenovic et al.'s learned whitening from matching pairs: all same-class pairs of ``labels``,
    or the explicit index ``pairs`` (queries, positives). ``shrinkage`` regularises Cs towards
    ``trace(Cs) / D * I`` when there are fewer matching differences than dimensions."""
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    x = _as_codes(codes)
    n, d = x.shape
    if pairs is not None:
        cs = _pair_covariance(x, pairs)
    elif labels is not None:
        cs = _within_class_covariance(x, torch.as_tensor(np.asarray(labels)))
    else:
        raise ValueError(
            "learned whitening needs matching pairs: pass the codes' labels (or explicit pairs)"
        )
    cs = (1 - shrinkage) * cs + shrinkage * torch.trace(cs) / d * torch.eye(d, dtype=cs.dtype)
    try:
        chol = torch.linalg.cholesky(cs)
    except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise ValueError(
            f"the matching-pair covariance of {d}-d codes is singular (too few matching pairs or images per class); "
            "use more training codes or a shrinkage above 0"
        ) from None
    whiten_pairs = torch.linalg.inv(chol)  # P with P Cs P^T = I
    mean = x.mean(dim=0)
    y = (x - mean) @ whiten_pairs.T
    values, vectors = descending_eigh(y.T @ y / max(n - 1, 1))
    # shrinkage=1.0: every direction is regular after the Cholesky step.
    dim = _check_dim(dim, numerical_rank(values, (n, d)), (n, d), shrinkage=1.0)
    weight = vectors[:, :dim].T @ whiten_pairs
    return _linear(weight, mean)


def whiten(layer: nn.Module, codes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Apply a fitted whitening to codes and L2-normalise them again: float32 (N, dim) numpy."""
    x = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes).float()
    param = next(layer.parameters())
    with torch.no_grad():
        return F.normalize(layer(x.to(param.device, param.dtype)).float(), dim=1).cpu().numpy()


def _pair_covariance(x: torch.Tensor, pairs: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    q, p = (torch.as_tensor(np.asarray(a), dtype=torch.long) for a in pairs)
    if q.ndim != 1 or q.shape != p.shape or len(q) == 0:
        raise ValueError(
            f"pairs must be two equal-length 1-D index arrays, got shapes {tuple(q.shape)} and {tuple(p.shape)}"
        )
    if min(int(q.min()), int(p.min())) < 0 or max(int(q.max()), int(p.max())) >= len(x):
        raise ValueError(f"pair indices must lie in [0, {len(x)}) (the number of codes)")
    diff = x[q] - x[p]
    return diff.T @ diff / len(q)


def _within_class_covariance(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of (x_i - x_j)(x_i - x_j)^T over every ordered same-class pair i != j, in closed form.

    Within class c (n_c images, mean mu_c), the sum over ordered pairs equals 2 n_c S_c with
    S_c = sum_i (x_i - mu_c)(x_i - mu_c)^T; there are n_c (n_c - 1) such pairs.
    """
    if labels.ndim != 1 or len(labels) != len(x):
        raise ValueError(
            f"labels must hold one class per code, got shape {tuple(labels.shape)} for {len(x)} codes"
        )
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if not bool((counts >= 2).any()):
        raise ValueError(
            "learned whitening needs at least one class with 2 or more codes (a matching pair)"
        )
    means = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x) / counts[
        :, None
    ].to(x.dtype)
    centred = x - means[inverse]
    weights = (2 * counts.to(x.dtype))[inverse]  # each image's scatter counts 2 n_c times
    total_pairs = float((counts * (counts - 1)).sum())
    return (centred * weights[:, None]).T @ centred / total_pairs


def _check_dim(dim: int | None, rank: int, shape: tuple[int, int], shrinkage: float) -> int:
    n, d = shape
    if dim is None:
        return rank if shrinkage == 0 else d
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= d:
        raise ValueError(f"the whitened dimension must be an integer in [1, {d}], got {dim!r}")
    if dim > rank and shrinkage == 0:
        raise ValueError(
            f"{n} codes of {d} dimensions span only {rank} directions, so whitening to {dim} would divide by "
            "zero variance: choose a dimension <= that rank, fit on more codes, or set a shrinkage above 0"
        )
    return int(dim)


def _as_codes(codes: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = (
        torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        .detach()
        .cpu()
        .double()
    )
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"whitening is learned on a 2-D (codes, dimensions) array of at least 2 codes, got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("the codes to learn the whitening on contain NaN or inf")
    return x


def _linear(weight: torch.Tensor, mean: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        layer.bias.copy_((-(weight @ mean)).float())
    return layer
