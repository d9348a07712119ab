"""The ConvNet of Babenko et al. (ECCV 2014) with the course's changes, for 64x64 inputs.

    conv1 96 4x4 -> maxpool 3/2 -> conv2 192 5x5 -> maxpool 3/2 -> conv3 288 3x3 -> conv4 288 3x3
    -> conv5 256 3x3 -> maxpool 3/2 -> flatten (L5, 8*8*256 = 16,384) -> dropout -> fc6 2048 + ReLU (L6)
    -> dropout -> fc7 2048 + ReLU (L7) -> fc8 num_classes (logits)

'Same' padding everywhere, so the spatial size only halves at the pools (64 -> 32 -> 16 -> 8).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS = ("L5", "L6", "L7", "logits")


def _conv(in_ch: int, out_ch: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    # 'Same' padding as Keras computes it: an even kernel pads one more on the bottom/right. Padding
    # explicitly avoids the extra copy PyTorch's padding="same" makes for even kernels.
    before, after = (kernel - 1) // 2, kernel // 2
    layers: list[nn.Module] = []
    if before == after:
        layers.append(nn.Conv2d(in_ch, out_ch, kernel, padding=before, bias=not batch_norm))
    else:
        layers += [
            nn.ZeroPad2d((before, after, before, after)),
            nn.Conv2d(in_ch, out_ch, kernel, bias=not batch_norm),
        ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _pool() -> nn.Module:
    # Padding 1 halves the size exactly, as Keras' padding='same' pooling does: 64 -> 32 -> 16 -> 8.
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class NeuralCodesConvNet(nn.Module):
    """AlexNet-style classifier whose L5/L6/L7 activations are the neural codes."""

    input_size = (
        64  # fc6 takes the 8x8 map of a 64x64 image: multi-scale views are zoomed back to it
    )

    def __init__(
        self, num_classes: int = 190, batch_norm: bool = False, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.batch_norm = batch_norm
        self.features = nn.Sequential(
            *_conv(3, 96, 4, batch_norm),
            _pool(),
            *_conv(96, 192, 5, batch_norm),
            _pool(),
            *_conv(192, 288, 3, batch_norm),
            *_conv(288, 288, 3, batch_norm),
            *_conv(288, 256, 3, batch_norm),
            _pool(),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc6 = nn.Linear(8 * 8 * 256, 2048)
        self.fc7 = nn.Linear(2048, 2048)
        self.fc8 = nn.Linear(2048, num_classes)

    def forward_features(
        self, x: torch.Tensor, layers: Sequence[str] = LAYERS
    ) -> dict[str, torch.Tensor]:
        """Activations of the named layers from one forward pass (stops after the last one asked for)."""
        unknown = set(layers) - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; choose from {list(LAYERS)}")
        if x.shape[-2:] != (64, 64):
            raise ValueError(f"the ConvNet expects 64x64 images, got {tuple(x.shape[-2:])}")
        out: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        # Flatten in (C, H, W) order, as PyTorch's nn.Flatten does.
        l5 = torch.flatten(self.features(x), 1)
        out["L5"] = l5
        if wanted <= {"L5"}:
            return {k: out[k] for k in layers}
        l6 = F.relu(self.fc6(self.dropout(l5)))
        out["L6"] = l6
        if wanted <= {"L5", "L6"}:
            return {k: out[k] for k in layers}
        l7 = F.relu(self.fc7(self.dropout(l6)))
        out["L7"] = l7
        if "logits" in wanted:
            out["logits"] = self.fc8(l7)
        return {k: out[k] for k in layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, ("logits",))["logits"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
