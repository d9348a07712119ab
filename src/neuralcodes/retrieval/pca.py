"""PCA compression of neural codes (Babenko et al., "Neural Codes for Image Retrieval", 2014).

Project onto the leading principal directions learned on in-domain training codes, optionally
whiten, then L2-normalise again; ``pca_study`` measures mAP against the kept dimension.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch

from neuralcodes.layers.eigen import principal_axes
from neuralcodes.progress import track
from neuralcodes.retrieval.codes import l2_normalize
from neuralcodes.retrieval.evaluate import retrieval_metrics

DEFAULT_PCA_DIMS: tuple[int | None, ...] = (16, 32, 64, 128, 256, 512, None)


class PCA:
    """Principal components of codes, for compressed codes (Babenko et al. 2014).

    Fit it on in-domain *training* codes, never on the set being evaluated: learning the projection
    on the evaluation images would leak their distribution into the codes and flatter the mAP.

    The decomposition is :func:`neuralcodes.layers.eigen.principal_axes` (PCA-whitening's too): float64
    on whichever of the (N, N) Gram matrix or the (D, D) covariance is smaller, so 16384-d codes of a
    few thousand images stay cheap. Components are signed so that each one's largest coordinate is positive.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-8) -> None:
        if n_components is not None and (
            isinstance(n_components, bool)
            or not isinstance(n_components, (int, np.integer))
            or n_components < 1
        ):
            raise ValueError(
                f"n_components must be a positive integer or None (keep all), got {n_components!r}"
            )
        self.n_components = n_components
        self.eps = eps
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (k, D) float32, unit rows
        self.eigenvalues_: np.ndarray | None = (
            None  # (k,) variance along each component (N - 1 normaliser)
        )

    @property
    def n_components_(self) -> int:
        return 0 if self.components_ is None else len(self.components_)

    def fit(self, train_codes: np.ndarray | torch.Tensor) -> "PCA":
        """Learn mean and components from (N, D) training codes (N >= 2, finite); returns ``self``.

        Keeps ``min(n_components, rank)`` components: at most N - 1 for N codes, so a later
        ``transform(d=...)`` above that is refused.
        """
        x = torch.from_numpy(_as_matrix(train_codes, "train_codes")).double()
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"PCA needs at least 2 training codes, got {n}")
        # Only the directions the codes resolve, through the Gram matrix when N <= D (layers/eigen.py):
        # the same decomposition as PCA-whitening's, so both give the same components.
        basis = principal_axes(x, complete=False)
        keep = basis.rank if self.n_components is None else min(basis.rank, self.n_components)
        self.mean_ = basis.mean.numpy()
        self.components_ = basis.vectors[:, :keep].T.contiguous().float().numpy()
        self.eigenvalues_ = basis.values[:keep].numpy()
        return self

    def project(
        self, x: np.ndarray | torch.Tensor, d: int | None = None, whiten: bool = False
    ) -> np.ndarray:
        """(N, d) float32 coordinates on the first ``d`` components (whitened: divided by sqrt(eigenvalue + eps))."""
        if self.components_ is None or self.mean_ is None or self.eigenvalues_ is None:
            raise RuntimeError("PCA is not fitted: call fit(train_codes) first")
        d = self._check_dim(d)
        x = _as_matrix(x, "codes")
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"codes have {x.shape[1]} dimensions but the PCA was fitted on {self.mean_.shape[0]}"
            )
        centred = x - self.mean_.astype(np.float32)
        projected = centred @ self.components_[:d].T
        if whiten:
            projected /= np.sqrt(self.eigenvalues_[:d] + self.eps).astype(np.float32)
        return projected

    def transform(
        self, x: np.ndarray | torch.Tensor, d: int | None = None, whiten: bool = False
    ) -> np.ndarray:
        """:meth:`project`, then L2-normalise: (N, d) float32 unit rows ready for Euclidean retrieval."""
        return l2_normalize(self.project(x, d, whiten), what="PCA codes")

    def _check_dim(self, d: int | None) -> int:
        if d is None:
            return self.n_components_
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"d must be a positive integer or None (all components), got {d!r}")
        if d > self.n_components_:
            raise ValueError(
                f"d={d} exceeds the {self.n_components_} components this PCA holds (the rank of the "
                "training codes, or n_components); choose a smaller d or fit on more training codes"
            )
        return int(d)


def _as_matrix(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(
        x, torch.Tensor
    ):  # np.asarray fails on CUDA tensors and on tensors that require grad
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"{what} must be a non-empty 2-D (items, dimensions) array, got shape {x.shape}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    return x


def pca_study(
    train_codes: np.ndarray,
    eval_codes: np.ndarray,
    eval_labels: np.ndarray,
    dims: Iterable[int | None] = DEFAULT_PCA_DIMS,
    whiten: bool = False,
    block_size: int | None = None,
) -> list[dict]:
    """Leave-one-out mAP of ``eval_codes`` compressed to each of ``dims`` (None: the full codes).

    The PCA is fitted on ``train_codes`` (in-domain training images) only. Dimensions above the
    training codes' rank are skipped with a warning. Rows: ``{"dim", "pca", "whiten", "mAP", "mAP@R"}``.
    """
    dims = list(dims)
    eval_codes = _as_matrix(eval_codes, "eval_codes")
    largest = max((d for d in dims if d is not None), default=None)
    pca = PCA(n_components=largest).fit(train_codes) if largest is not None else None
    rows = []
    for d in track(dims, description="PCA study", unit="dims"):
        if d is None:
            reduced, row = eval_codes, {"dim": eval_codes.shape[1], "pca": False, "whiten": False}
        elif pca is not None and d > pca.n_components_:
            warnings.warn(
                f"skipping d={d}: the training codes have only {pca.n_components_} principal components",
                stacklevel=2,
            )
            continue
        else:
            reduced = pca.transform(eval_codes, d, whiten=whiten)  # type: ignore[union-attr]
            row = {"dim": d, "pca": True, "whiten": whiten}
        metrics = retrieval_metrics(reduced, eval_labels, ks=(), block_size=block_size)
        rows.append({**row, "mAP": metrics["mAP"], "mAP@R": metrics["mAP@R"]})
    return rows
