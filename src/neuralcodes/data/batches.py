"""uint8 images -> float batches in [0, 1] on the target device; augmentation lives here.

JPEGs are never decoded here: the images are the cache's uint8 arrays. When they fit, the whole
uint8 array is moved to the device once (``DeviceImages``), so a batch is an index and a divide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


class DeviceImages:
    """uint8 (N, H, W, 3) RGB images held as an NCHW uint8 tensor, on ``device`` when they fit.

    ``images``: a numpy array (a memory map is fine) or a tensor, uint8, channels last, as
    ``load_dataset`` gives them; anything else (float, NCHW, grayscale, RGBA) is refused with a
    message saying how to convert it. On CUDA the whole array goes to the GPU if it takes at most half
    the free memory (Tiny ImageNet's 100,000 images are 1.2 GB); otherwise it stays in pinned host
    memory and each batch is copied over.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        device: torch.device | str = "cpu",
        max_fraction: float = 0.5,
    ) -> None:
        device = torch.device(device)
        _check_images(images)
        if isinstance(
            images, torch.Tensor
        ):  # np.array(tensor) warns (no copy keyword) and fails on CUDA
            images = images.detach().cpu().numpy()
        # One host copy (a read-only memory map is read here once), then at most one transfer.
        tensor = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2)
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        storage = device
        if (
            device.type == "cuda"
            and tensor.nbytes > max_fraction * torch.cuda.mem_get_info(device)[0]
        ):
            storage, tensor = torch.device("cpu"), tensor.pin_memory()
        self.images = tensor.to(storage)
        self.storage = storage
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float batch in [0, 1], NCHW, channels-last memory, on ``device``."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.storage)
        x = self.images.index_select(0, idx)
        if self.storage != self.device:
            x = x.to(self.device, non_blocking=True)
        # index_select returns NCHW-contiguous memory; the models run channels-last.
        return x.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def _check_images(images: object) -> None:
    """Refuse what ``np.array(images, dtype=uint8)`` would silently turn into wrong pixels."""
    dtype, shape = getattr(images, "dtype", None), tuple(getattr(images, "shape", ()))
    if dtype is None or not shape:
        raise TypeError(
            f"images must be a uint8 (N, H, W, 3) numpy array or tensor, got {type(images).__name__}"
        )
    if str(dtype) not in ("uint8", "torch.uint8"):
        # Casting would make [0, 1] floats black and wrap values above 255: the model would still run.
        raise TypeError(
            f"images must be uint8 RGB in [0, 255], got dtype {dtype}; convert floats in [0, 1] with "
            "(images * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if len(shape) != 4 or shape[3] != 3:
        if len(shape) == 4 and shape[1] == 3:
            hint = "; these look channels-first (N, 3, H, W): pass images.transpose(0, 2, 3, 1)"
        elif len(shape) == 3:
            hint = "; for one image pass images[None], for grayscale repeat it to 3 channels"
        else:
            hint = "; convert grayscale or RGBA images to RGB first"
        raise ValueError(f"images must have shape (N, H, W, 3), channels last, got {shape}{hint}")


@dataclass
class Augment:
    """Random crop with zero padding and horizontal flip (the standard CIFAR-style recipe)."""

    pad: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
        if self.pad:
            padded = F.pad(x, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            # Gather each image's crop with one advanced index instead of a Python loop.
            rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
            cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def iterate_batches(
    images: DeviceImages,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float images, int64 labels) for ``indices`` in batches.

    Shuffling and augmentation draw only from ``generator`` (a CPU generator), so a run that
    restores the generator's state reproduces the same batches. ``shard=(rank, size)``: yield only
    this process's part of each batch (multi-process training; ``batch_size`` is the global batch).
    """
    indices = np.asarray(indices)
    if shuffle:
        order = torch.randperm(len(indices), generator=generator).numpy()
        indices = indices[order]
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        if shard is not None:
            rank, size = shard
            idx = np.array_split(idx, size)[rank]
        x = images.batch(idx)
        if augment is not None:
            x = augment(x, generator if generator is not None else torch.default_generator)
        yield x, labels_t[idx].to(images.device, non_blocking=True)
