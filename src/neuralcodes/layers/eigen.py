"""The one eigen-decomposition of codes behind PCA and PCA-whitening: descending, signs fixed, numerical rank.

:func:`principal_axes` gives the codes' mean, the variance along each principal direction (largest first,
``N - 1`` normaliser) and the directions themselves, in float64. Two routes, the same axes up to float
rounding:

- ``complete=True``: every one of the D directions, from the (D, D) covariance. Whitening with shrinkage
  reaches past the codes' rank (into directions of zero variance), so it needs them all.
- ``complete=False``: only the directions the codes resolve (their numerical rank), from whichever of the
  (N, N) Gram matrix or the (D, D) covariance is smaller, so 16,384-d L5 codes of a few thousand images stay
  cheap (:class:`neuralcodes.retrieval.pca.PCA`).

Each direction is signed so that its largest coordinate is positive: a refit on the same codes gives the same
axes, and PCA and PCA-whitening of the same codes agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Eigenbasis:
    """The codes' mean and principal axes (descending): what every PCA and PCA-whitening of them is made
    from, so trying many dimensions / powers / shrinkages decomposes once."""

    mean: torch.Tensor  # (D,) float64
    values: (
        torch.Tensor
    )  # (K,) variance along each direction, descending (K = D when complete, else the rank)
    vectors: torch.Tensor  # (D, K) unit directions as columns, signs fixed
    shape: tuple[int, int]  # (N, D) of the codes it was fitted on
    rank: int  # directions the float32 codes resolve (see numerical_rank)


def principal_axes(codes: torch.Tensor, complete: bool = True) -> Eigenbasis:
    """Principal axes of (N, D) float64 codes (N >= 2, finite; the caller checks, naming its own input).

    ``complete=False`` keeps only the first ``rank`` axes and takes the Gram route when N <= D.
    """
    n, d = (int(s) for s in codes.shape)
    mean = codes.mean(dim=0)
    if complete or n > d:
        values, vectors = descending_eigh(
            torch.cov(codes.T, correction=1).reshape(d, d), fix_signs=False
        )
        rank = numerical_rank(values, (n, d))
        if not complete:
            values, vectors = values[:rank], vectors[:, :rank]
    else:
        # Eigenvectors u of X X^T (X centred) give the directions X^T u / sqrt(eigenvalue); the Gram matrix has
        # the same non-zero eigenvalues as X^T X.
        centred = codes - mean
        gram_values, u = descending_eigh(centred @ centred.T, fix_signs=False)
        rank = numerical_rank(gram_values, (n, d))
        vectors = (centred.T @ u[:, :rank]) / gram_values[:rank].sqrt()
        values = gram_values[:rank] / (n - 1)
    return Eigenbasis(mean, values, _fix_signs(vectors), (n, d), rank)


def descending_eigh(
    matrix: torch.Tensor, fix_signs: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and unit eigenvectors (columns) of a symmetric matrix, signs fixed."""
    values, vectors = torch.linalg.eigh(matrix)
    values, vectors = values.flip(0), vectors.flip(1)
    return values, (_fix_signs(vectors) if fix_signs else vectors)


def numerical_rank(descending_values: torch.Tensor, shape: tuple[int, int]) -> int:
    """Directions float32 codes of ``shape`` (N, D) resolve: singular values above max(N, D) * float32 eps of
    the largest (at least 1)."""
    # The eigenvalues are squared singular values (up to a common scale), hence the squared relative tolerance.
    relative = (max(shape) * float(np.finfo(np.float32).eps)) ** 2
    tolerance = descending_values[0].clamp_min(0) * relative
    return max(1, int((descending_values > tolerance).sum()))


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    # An eigenvector's sign is arbitrary (LAPACK's choice); the largest coordinate made positive pins it down.
    largest = vectors.abs().argmax(dim=0)
    return vectors * torch.sign(vectors[largest, torch.arange(vectors.shape[1])])
