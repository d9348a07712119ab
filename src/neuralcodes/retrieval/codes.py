"""Neural codes: L2-normalised activations of a trained network, and their storage.

Codes are extracted in one batched forward pass per batch for all requested layers and stored as one
``.npz`` per layer (optionally in float16). Compression lives in :mod:`neuralcodes.retrieval.pca`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralcodes.data.batches import DeviceImages
from neuralcodes.device import autocast as autocast_context
from neuralcodes.io import save_npz
from neuralcodes.progress import ProgressBar

# F.normalize divides by max(norm, eps), so an all-zero code (a dead layer, a blank image) stays
# zero instead of becoming NaN.
ZERO_NORM = 1e-12
_FORMAT_VERSION = 1


class ZeroCodeWarning(UserWarning):
    """Some codes are all zero (a dead layer or a blank image): they stay zero instead of becoming NaN."""


def l2_normalize(codes: np.ndarray | torch.Tensor, what: str = "codes") -> np.ndarray:
    """float32 rows of unit length; all-zero rows stay zero and are counted in a :class:`ZeroCodeWarning`.

    The numpy-facing L2 normalisation of the package; on tensors, ``torch.nn.functional.normalize``.
    """
    x = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes).float()
    if x.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D (items, dimensions) array, got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf; check the model's outputs before normalising")
    _warn_zero_codes(_count_zero_codes(x), len(x), what)
    return F.normalize(x, dim=1, eps=ZERO_NORM).cpu().numpy()


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
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """L2-normalised float32 codes ``{layer: (len(indices), dim)}`` from ``model.forward_features``.

    ``images``: :class:`DeviceImages`; ``indices``: 1-D integer indices into them (row i of each
    output is image ``indices[i]``); ``layers``: names ``model.forward_features`` knows (the ConvNet:
    ``"L5"``, ``"L6"``, ``"L7"``, ``"logits"``); an unknown name is a ``ValueError`` listing them.

    Each batch goes through the model once for all ``layers`` (eval mode, inference mode); feature
    maps are flattened. ``device`` defaults to where the model's parameters are; the model is moved
    there if asked for another, and its train/eval mode is restored afterwards.

    ``scales`` and ``flip``: multi-scale and flipped codes (the cirtorch multi-scale test): each image
    is also seen resized by every scale (and mirrored), and its code is the mean of the views'
    L2-normalised codes, normalised again. A network with a fixed input size (``input_size``, the
    ConvNet's 64) sees each resized view centre-cropped or zero-padded back to that size, i.e. zoomed.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers or not all(isinstance(name, str) for name in layers):
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    if not hasattr(model, "forward_features"):
        raise TypeError(
            f"{type(model).__name__} has no forward_features(x, layers) method to extract codes from"
        )
    if not isinstance(images, DeviceImages):  # a raw array would fail later on a missing .batch()
        raise TypeError(
            f"images must be DeviceImages, got {type(images).__name__}: wrap uint8 (N, H, W, 3) images "
            "once with DeviceImages(images, device) and reuse it for every extraction"
        )
    indices = _as_indices(indices, len(images))
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device) if device is not None else _model_device(model, images.device)
    model.to(device)

    outputs: dict[str, np.ndarray] = {}
    zero_counts = dict.fromkeys(layers, 0)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            ProgressBar(len(indices), f"codes {'+'.join(layers)}", unit="images") as bar,
        ):
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                x = images.batch(batch).to(device, non_blocking=True)
                summed: dict[str, torch.Tensor] = {}
                for view in multi_views(x, scales, flip, getattr(model, "input_size", None)):
                    features = _forward_features(model, view, layers, device, autocast)
                    for name in layers:
                        code = _batch_code(features, name).flatten(1).float()
                        if not torch.isfinite(code).all():
                            raise ValueError(
                                f"layer {name!r} produced NaN or inf for images {batch[:5].tolist()}..."
                            )
                        code = F.normalize(code, dim=1, eps=ZERO_NORM)
                        summed[name] = code if name not in summed else summed[name] + code
                for name, code in summed.items():
                    zero_counts[name] += _count_zero_codes(code)
                    if name not in outputs:
                        outputs[name] = np.empty((len(indices), code.shape[1]), dtype=np.float32)
                    outputs[name][start : start + len(batch)] = (
                        F.normalize(code, dim=1, eps=ZERO_NORM).cpu().numpy()
                    )
                bar.advance(len(batch))
    finally:
        model.train(was_training)
    for name, count in zero_counts.items():
        _warn_zero_codes(count, len(indices), f"{name} codes")
    return outputs


def multi_views(
    x: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    input_size: int | None = None,
) -> list[torch.Tensor]:
    """The views of a batch (N, C, H, W) a multi-scale code averages: each scale, and each mirrored when ``flip``.

    A resized view is bilinear with antialiasing; with ``input_size`` it is centre-cropped (zoom in)
    or zero-padded (zoom out) back to ``input_size`` x ``input_size``.
    """
    scales = list(scales)
    if not scales or any(
        isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 for s in scales
    ):
        raise ValueError(
            f"scales must be positive numbers, e.g. (1, 0.7071, 1.4142), got {scales!r}"
        )
    views = []
    for scale in scales:
        view = x
        if scale != 1:
            size = tuple(_resized(n, scale, centred=input_size is not None) for n in x.shape[-2:])
            view = F.interpolate(
                x.float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1
            )
            view = _fit(view, input_size) if input_size else view
        views.append(view.contiguous(memory_format=torch.channels_last))
        if flip:
            views.append(torch.flip(view, dims=[-1]).contiguous(memory_format=torch.channels_last))
    return views


def _resized(n: int, scale: float, centred: bool) -> int:
    if not centred:
        return max(1, round(n * scale))
    # Same parity as n, so the crop or pad back to n is exactly centred and commutes with the mirror.
    return max(2 - n % 2, n + 2 * round((n * scale - n) / 2))


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad the last two dimensions to ``size``."""
    for dim in (-2, -1):
        n = x.shape[dim]
        if n > size:
            x = x.narrow(dim, (n - size) // 2, size)
        elif n < size:
            before = (size - n) // 2
            pad = [0, 0, 0, 0]
            pad[0 if dim == -1 else 2], pad[1 if dim == -1 else 3] = before, size - n - before
            x = F.pad(x, pad)
    return x


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
        raise ValueError(
            f"indices must be a non-empty 1-D array of image indices, got {indices.dtype} {indices.shape}"
        )
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
            raise ValueError(
                f"codes must be 2-D (images, dimensions), got shape {self.codes.shape}"
            )
        if not np.isfinite(self.codes).all():
            raise ValueError(
                "codes contain NaN or inf; check the model's outputs before storing them"
            )
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
            raise ValueError(
                f"codes do not fit in {dtype} (values overflow to inf); save them as float32"
            )
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
                raise ValueError(
                    f"{path} is not a neuralcodes codes file (missing {sorted(missing)})"
                )
            return cls(
                codes=data["codes"].astype(np.float32),
                labels=data["labels"],
                indices=data["indices"],
                layer=str(data["layer"]),
            )
