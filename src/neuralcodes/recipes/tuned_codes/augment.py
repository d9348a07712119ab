"""Augmentation of a whole batch on its device, each image with its own random parameters.

Random resized crop, horizontal flip, small rotation and tilt (shear) are one affine map per image,
applied with a single ``grid_sample``; colour jitter scales brightness, contrast and saturation.
torchvision's transforms draw one set of parameters per call, so per-image parameters would need a
Python loop over the batch; one batched affine warp keeps the batch on the GPU. Every draw comes from
the given CPU generator: a resumed run replays the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class RetrievalAugment:
    scale: tuple[float, float] = (0.5, 1.0)  # area of the crop, as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect ratio
    flip: float = 0.5  # probability of a horizontal flip
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    tilt: float = 0.1  # shear, uniform in [-tilt, tilt]
    brightness: float = 0.3  # factors uniform in [1 - b, 1 + b]
    contrast: float = 0.3
    saturation: float = 0.3

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

        area = uniform(*self.scale)
        log_ratio = uniform(math.log(self.ratio[0]), math.log(self.ratio[1])).exp()
        w, h = (area * log_ratio).sqrt().clamp(max=1.0), (area / log_ratio).sqrt().clamp(max=1.0)
        cx, cy = (1 - w) * uniform(-1, 1), (1 - h) * uniform(-1, 1)
        sign = torch.where(torch.rand(n, generator=generator) < self.flip, -1.0, 1.0).double()
        angle = uniform(-self.rotation, self.rotation) * math.pi / 180
        shear = uniform(-self.tilt, self.tilt)
        cos, sin = angle.cos(), angle.sin()
        # Output grid (u, v) in [-1, 1] -> input point: centre + rotation @ shear @ diag(flip * w, h) @ (u, v).
        a11, a12 = cos * sign * w, (cos * shear - sin) * h
        a21, a22 = sin * sign * w, (sin * shear + cos) * h
        theta = torch.stack([torch.stack([a11, a12, cx], 1), torch.stack([a21, a22, cy], 1)], 1)
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return self._jitter(x, uniform).contiguous(memory_format=torch.channels_last)

    def _jitter(self, x: torch.Tensor, uniform) -> torch.Tensor:
        def factor(strength: float) -> torch.Tensor:
            return (
                uniform(1 - strength, 1 + strength)
                .to(device=x.device, dtype=x.dtype)
                .view(-1, 1, 1, 1)
            )

        luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = x * factor(self.brightness)
        gray_mean = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (x - gray_mean) * factor(self.contrast) + gray_mean
        gray = (x * luma).sum(1, keepdim=True)
        x = (x - gray) * factor(self.saturation) + gray
        return x.clamp(0.0, 1.0)
