"""Classifiers of 64x64 images whose last convolutional map is exposed, for retrieval-tuned codes.

- ``resnet18``: torchvision's ResNet-18 with the 64x64 stem of :func:`.backbones.resnet_64` (first
  conv 3x3 stride 1, no max-pool), so the last map is 8x8x512; global average pooling and one
  linear layer classify.
- ``tiny``: three conv-BN-ReLU blocks (16x16x32 map): trains in seconds, for tests and smoke runs.

``forward_features(x, layers)`` returns ``conv`` (the last map, what GeM pools), ``pool`` (its
global average, the classification code) and ``logits``, like the course ConvNet's L5/L6/L7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neuralcodes.models.backbones import resnet_64

LAYERS = ("conv", "pool", "logits")
ARCHS = ("resnet18", "tiny")


class ResNetMap(nn.Module):
    """A :class:`TorchvisionResNet` up to its last residual stage: images in [0, 1] -> (B, 512, 8, 8)."""

    def __init__(self, name: str = "resnet18") -> None:
        super().__init__()
        resnet = resnet_64(name)
        self.normalize = resnet.normalize
        net = resnet.net
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = resnet.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(self.normalize(x)))


class TinyMap(nn.Module):
    """conv-BN-ReLU x3 with two 2x max-pools: (B, 3, 64, 64) -> (B, 2 * width, 16, 16)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.net = nn.Sequential(
            *block(3, width),
            nn.MaxPool2d(2),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
        )
        self.out_channels = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)


class MapClassifier(nn.Module):
    """A feature-map network + global average pooling + a linear classifier."""

    def __init__(self, num_classes: int, arch: str = "resnet18") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(
                f"unknown classifier architecture {arch!r}; choose one of {', '.join(ARCHS)}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.arch = arch
        self.features = ResNetMap(arch) if arch == "resnet18" else TinyMap()
        self.fc = nn.Linear(self.features.out_channels, num_classes)

    def forward_features(
        self, x: torch.Tensor, layers: Sequence[str] = LAYERS
    ) -> dict[str, torch.Tensor]:
        unknown = set(layers) - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; choose from {list(LAYERS)}")
        out = {"conv": self.features(x)}
        out["pool"] = out["conv"].mean(dim=(2, 3))
        if "logits" in layers:
            out["logits"] = self.fc(out["pool"])
        return {k: out[k] for k in layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, ("logits",))["logits"]
