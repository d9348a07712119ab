"""Neural codes: L2-normalised activations of a trained network, their storage, and PCA compression.

Codes are extracted in one batched forward pass per batch for all requested layers, stored as one
``.npz`` per layer (optionally in float16), and compressed with PCA as in Babenko et al., "Neural
Codes for Image Retrieval" (2014): project onto the leading principal directions, optionally whiten,
then L2-normalise again.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from neuralcodes.data.batches import DeviceImages
from neuralcodes.device import autocast as autocast_context
from neuralcodes.io import save_npz
from neuralcodes.layers.normalization import l2n
from neuralcodes.metrics import retrieval_metrics
from neuralcodes.progress import ProgressBar, track

ZERO_NORM = 1e-12
DEFAULT_PCA_DIMS: tuple[int | None, ...] = (16, 32, 64, 128, 256, 512, None)
_FORMAT_VERSION = 1


class ZeroCodeWarning(UserWarning):
    """Some codes are all zero (a dead layer or a blank image): they stay zero instead of becoming NaN."""


def l2_normalize(codes: np.ndarray | torch.Tensor, what: str = "codes") -> np.ndarray:
    """float32 rows of unit length; all-zero rows stay zero and are counted in a :class:`ZeroCodeWarning`."""
    x = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes).float()
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (items, dimensions) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf; check the model's outputs before normalising")
    _warn_zero_codes(_count_zero_codes(x), len(x), what)
    return l2n(x, eps=ZERO_NORM).cpu().numpy()


def _count_zero_codes(x: torch.Tensor) -> int:
    return int((torch.linalg.vector_norm(x, dim=1) < ZERO_NORM).sum())


def _warn_zero_codes(count: int, total: int, what: str) -> None:
    if count:
        warnings.warn(
            f"{count} of {total} {what} are all zero and stay zero after L2 normalisation",
            ZeroCodeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- extraction


def extract_codes(
    model: nn.Module,
    images: DeviceImages,
    indices: np.ndarray | Sequence[int],
    layers: Sequence[str] | str,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    autocast: bool = False,
) -> dict[str, np.ndarray]:
    """L2-normalised float32 codes ``{layer: (len(indices), dim)}`` from ``model.forward_features``.

    Each batch goes through the model once for all ``layers`` (eval mode, inference mode); feature
    maps are flattened. ``device`` defaults to where the model's parameters are; the model is moved
    there if asked for another, and its train/eval mode is restored afterwards.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers or not all(isinstance(name, str) for name in layers):
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    if not hasattr(model, "forward_features"):
        raise TypeError(f"{type(model).__name__} has no forward_features(x, layers) method to extract codes from")
    indices = _as_indices(indices, len(images))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model, images.device)
    model.to(device)

    outputs: dict[str, np.ndarray] = {}
    zero_counts = dict.fromkeys(layers, 0)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), ProgressBar(len(indices), f"codes {'+'.join(layers)}", unit="images") as bar:
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                x = images.batch(batch).to(device, non_blocking=True)
                features = _forward_features(model, x, layers, device, autocast)
                for name in layers:
                    code = _batch_code(features, name).flatten(1).float()
                    if not torch.isfinite(code).all():
                        raise ValueError(f"layer {name!r} produced NaN or inf for images {batch[:5].tolist()}...")
                    zero_counts[name] += _count_zero_codes(code)
                    if name not in outputs:
                        outputs[name] = np.empty((len(indices), code.shape[1]), dtype=np.float32)
                    outputs[name][start : start + len(batch)] = l2n(code, eps=ZERO_NORM).cpu().numpy()
                bar.advance(len(batch))
    finally:
        model.train(was_training)
    for name, count in zero_counts.items():
        _warn_zero_codes(count, len(indices), f"{name} codes")
    return outputs


def _forward_features(
    model: nn.Module, x: torch.Tensor, layers: list[str], device: torch.device, autocast: bool
) -> dict[str, torch.Tensor]:
    try:
        with autocast_context(device, enabled=autocast):
            return model.forward_features(x, layers)
    except KeyError as err:
        raise ValueError(
            f"{type(model).__name__}.forward_features does not know layer {err}; asked for {layers}"
        ) from err


def _batch_code(features: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in features:
        raise ValueError(f"the model returned no layer {name!r}; it returned {sorted(features)}")
    return features[name]


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else fallback


def _as_indices(indices: np.ndarray | Sequence[int], n_images: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-D array of image indices, got {indices.dtype} {indices.shape}")
    if indices.min() < 0 or indices.max() >= n_images:
        raise ValueError(f"indices must lie in [0, {n_images}) (the number of images)")
    return indices.astype(np.int64)


# --------------------------------------------------------------------------- storage


@dataclass
class Codes:
    """Codes of one layer for a set of images: row i is image ``indices[i]`` of class ``labels[i]``."""

    codes: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    layer: str

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.float32)
        self.labels = np.asarray(self.labels)
        self.indices = np.asarray(self.indices)
        n = len(self.codes)
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be 2-D (images, dimensions), got shape {self.codes.shape}")
        if not np.isfinite(self.codes).all():
            raise ValueError("codes contain NaN or inf; check the model's outputs before storing them")
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(
                f"labels {self.labels.shape} and indices {self.indices.shape} must both have shape ({n},), "
                "one per code"
            )

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def dim(self) -> int:
        return self.codes.shape[1]

    def save(self, path: str | os.PathLike, dtype: np.dtype | type | str = np.float32) -> Path:
        """Write one ``.npz`` atomically; ``dtype`` float16 halves the file (read back as float32)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"codes are stored as float32 or float16, not {dtype}")
        if self.codes.size and np.abs(self.codes).max() > np.finfo(dtype).max:
            raise ValueError(f"codes do not fit in {dtype} (values overflow to inf); save them as float32")
        stored = self.codes.astype(dtype)
        path = Path(path)
        save_npz(
            path,
            codes=stored,
            labels=self.labels,
            indices=self.indices,
            layer=np.array(self.layer),
            format_version=np.array(_FORMAT_VERSION),
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Codes":
        """Read a file written by :meth:`save`; codes come back as float32."""
        with np.load(path, allow_pickle=False) as data:
            missing = {"codes", "labels", "indices", "layer"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a neuralcodes codes file (missing {sorted(missing)})")
            return cls(
                codes=data["codes"].astype(np.float32),
                labels=data["labels"],
                indices=data["indices"],
                layer=str(data["layer"]),
            )


# --------------------------------------------------------------------------- PCA


class PCA:
    """Principal components of codes, for compressed codes (Babenko et al. 2014).

    Fit it on in-domain *training* codes, never on the set being evaluated: learning the projection
    on the evaluation images would leak their distribution into the codes and flatter the mAP.

    The decomposition runs in float64 on whichever of the (N, N) Gram matrix or the (D, D)
    covariance is smaller, so 16384-d codes of a few thousand images stay cheap. Components are
    signed so that each one's largest coordinate is positive.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-8) -> None:
        if n_components is not None and n_components < 1:
            raise ValueError(f"n_components must be positive or None (keep all), got {n_components}")
        self.n_components = n_components
        self.eps = eps
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (k, D) float32, unit rows
        self.eigenvalues_: np.ndarray | None = None  # (k,) variance along each component (N - 1 normaliser)

    @property
    def n_components_(self) -> int:
        return 0 if self.components_ is None else len(self.components_)

    def fit(self, train_codes: np.ndarray) -> "PCA":
        x = torch.from_numpy(_as_matrix(train_codes, "train_codes")).double()
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 training codes, got {n}")
        mean = x.mean(dim=0)
        x -= mean
        if n <= d:
            # Economical route: eigenvectors u of X X^T give directions X^T u / sqrt(eigenvalue).
            values, vectors = torch.linalg.eigh(x @ x.T)
            values, vectors = values.flip(0), vectors.flip(1)
            keep = _numerical_rank(values, max(n, d))
            directions = (x.T @ vectors[:, :keep]) / values[:keep].sqrt()
        else:
            values, vectors = torch.linalg.eigh(x.T @ x)
            values, vectors = values.flip(0), vectors.flip(1)
            keep = _numerical_rank(values, max(n, d))
            directions = vectors[:, :keep]
        keep = keep if self.n_components is None else min(keep, self.n_components)
        directions = directions[:, :keep]
        largest = directions.abs().argmax(dim=0)
        directions *= torch.sign(directions[largest, torch.arange(keep)])
        self.mean_ = mean.numpy()
        self.components_ = directions.T.contiguous().float().numpy()
        self.eigenvalues_ = (values[:keep] / (n - 1)).numpy()
        return self

    def project(self, x: np.ndarray, d: int | None = None, whiten: bool = False) -> np.ndarray:
        """(N, d) coordinates on the first ``d`` components (whitened: divided by sqrt(eigenvalue + eps))."""
        if self.components_ is None or self.mean_ is None or self.eigenvalues_ is None:
            raise RuntimeError("PCA is not fitted: call fit(train_codes) first")
        d = self._check_dim(d)
        x = _as_matrix(x, "codes")
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"codes have {x.shape[1]} dimensions but the PCA was fitted on {self.mean_.shape[0]}")
        centred = x - self.mean_.astype(np.float32)
        projected = centred @ self.components_[:d].T
        if whiten:
            projected /= np.sqrt(self.eigenvalues_[:d] + self.eps).astype(np.float32)
        return projected

    def transform(self, x: np.ndarray, d: int | None = None, whiten: bool = False) -> np.ndarray:
        """:meth:`project`, then L2-normalise: compressed codes ready for Euclidean retrieval."""
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


def _numerical_rank(descending_values: torch.Tensor, size: int) -> int:
    """Components the float32 codes resolve: singular values above size * float32 eps of the largest."""
    # The eigenvalues are squared singular values, hence the squared tolerance.
    relative = (size * float(np.finfo(np.float32).eps)) ** 2
    tolerance = descending_values[0].clamp_min(0) * relative
    return max(1, int((descending_values > tolerance).sum()))


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty 2-D (items, dimensions) array, got shape {x.shape}")
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
