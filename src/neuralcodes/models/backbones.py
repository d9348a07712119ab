"""Backbones for the deep-ranking network: [0, 1] RGB images (B, 3, H, W) -> features (B, F).

A thin registry (:data:`BACKBONES`) maps a name to a builder; every backbone normalises its own
input and exposes ``out_features``.

- ``resnet18`` / ``resnet50`` / ``resnet101`` (torchvision), adapted to 64x64 inputs as for CIFAR:
  the first convolution gets stride 1 and the max-pool is removed, so a 64x64 image still leaves
  an 8x8 map before global pooling (the ImageNet stem would leave 2x2 and throw away most of the
  little detail there is). Untrained, the first conv is the CIFAR 3x3 one; pretrained, the 7x7
  ImageNet kernel is kept (only its stride changes) so the weights still apply.
- ``efficientnet_lite0``: ImageNet-1k weights (see :mod:`.efficientnet_lite`); the image is
  upsampled to ``image_size`` instead, because the weights expect ImageNet-scale objects.
- ``convnet``: the course ConvNet initialised from a ``neuralcodes train`` run (its L7 code);
  registered by :mod:`neuralcodes.recipes.neural_codes.train`, which owns that run format.
- ``tiny``: a two-conv network for tests and smoke runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TinyBackbone(nn.Module):
    """conv-relu-pool x2 + global average pool: fast enough to train in a test."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)


class TorchvisionResNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.out_features = net.fc.in_features
        net.fc = nn.Identity()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def resnet_64(
    name: str = "resnet18", pretrained: bool = False, weights: str | Path | None = None
) -> nn.Module:
    """A torchvision ResNet with the 64x64 (CIFAR-style) stem described above, as a
    :class:`TorchvisionResNet` (``fc`` removed, input normalisation inside)."""
    return _resnet(name, pretrained, weights)


def _resnet(name: str, pretrained: bool, weights: str | Path | None) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if pretrained or weights is not None:
        net.load_state_dict(_torchvision_state_dict(name, weights))
        net.conv1.stride = (1, 1)
    else:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return TorchvisionResNet(net)


def _torchvision_state_dict(name: str, weights: str | Path | None) -> dict[str, torch.Tensor]:
    """ImageNet weights from a local file, else torchvision's download (cached in TORCH_HOME)."""
    import torchvision

    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"weight file {path} does not exist")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as exc:  # a text file, a truncated download: name the file, not the unpickler's KeyError
            raise ValueError(
                f"weight file {path} cannot be read as PyTorch weights ({type(exc).__name__}: {exc})"
            ) from None
    enum = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return enum.get_state_dict(progress=True)
    except Exception as exc:  # offline: URLError, socket errors, ...
        raise FileNotFoundError(
            f"cannot download the {name} ImageNet weights ({type(exc).__name__}: {exc}); offline, download "
            f"{enum.url} elsewhere and pass the file with --weights PATH (or put it in $TORCH_HOME/hub/checkpoints/)"
        ) from exc


class ConvNetBackbone(nn.Module):
    """The course ConvNet up to its L7 code (the input of the classifier)."""

    def __init__(self, net: nn.Module, layer: str = "L7") -> None:
        super().__init__()
        self.net = net
        self.layer = layer
        with torch.no_grad():
            self.out_features = int(
                net.forward_features(torch.zeros(1, 3, 64, 64), (layer,))[layer].flatten(1).shape[1]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x, (self.layer,))[self.layer].flatten(1)


def _efficientnet_lite0(pretrained: bool, weights: str | Path | None, image_size: int) -> nn.Module:
    from neuralcodes.models.efficientnet_lite import EfficientNetLite0Features

    return EfficientNetLite0Features(pretrained=pretrained, image_size=image_size, weights=weights)


Builder = Callable[[bool, "str | Path | None", int], nn.Module]
BACKBONES: dict[str, Builder] = {
    "tiny": lambda pretrained, weights, size: TinyBackbone(),
    "resnet18": lambda pretrained, weights, size: _resnet("resnet18", pretrained, weights),
    "resnet50": lambda pretrained, weights, size: _resnet("resnet50", pretrained, weights),
    "resnet101": lambda pretrained, weights, size: _resnet("resnet101", pretrained, weights),
    "efficientnet_lite0": _efficientnet_lite0,
}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: add a builder ``(pretrained, weights, image_size) -> nn.Module`` to :data:`BACKBONES`.

    Backbones that need a recipe's run folder (the course ConvNet) are registered by that recipe.
    """

    def add(builder: Builder) -> Builder:
        BACKBONES[name] = builder
        return builder

    return add


def build_backbone(
    name: str, pretrained: bool = False, weights: str | Path | None = None, image_size: int = 64
) -> nn.Module:
    """Backbone ``name`` from :data:`BACKBONES`; ``weights`` is a local weight file (or a run for convnet)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](pretrained, weights, image_size)
