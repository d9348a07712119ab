"""What retrieval-tuned codes start from: a trained classifier (or ImageNet weights), its data and split.

A base exposes its last convolutional feature map (what GeM pools) and, for a classifier, its
classification codes (what the comparison beats):

- a ``neuralcodes train`` run: the course ConvNet; map = conv5 after its ReLU (16x16x256, before the
  last max-pool), classification codes L5 / L6 / L7;
- a ``neuralcodes tuned classifier`` run: ResNet-18 (or tiny); map = the last stage (8x8x512),
  classification code = its global average ("pool");
- ``efficientnet_lite0``: ImageNet-1k weights off the shelf, images upsampled to ``image_size``;
  map = the 1280-channel head; it has seen every Tiny ImageNet class in pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.splits import Split
from neuralcodes.device import pick_device
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.models.efficientnet_lite import EfficientNetLite0Features
from neuralcodes.recipes.neural_codes.train import make_split, open_trained
from neuralcodes.recipes.tuned_codes.classifier import open_map_classifier
from neuralcodes.recipes.tuned_codes.config import PRETRAINED_BASES
from neuralcodes.runs import Run

_LABELS = {
    "convnet": "ConvNet",
    "resnet18": "ResNet-18",
    "efficientnet_lite0": "EfficientNet-Lite0 (ImageNet)",
}
_MAPS = {"convnet": "conv5", "resnet18": "layer4", "efficientnet_lite0": "head"}


class ConvNetConv5(nn.Module):
    """The course ConvNet up to conv5 + ReLU (its feature stack without the last max-pool)."""

    def __init__(self, net: NeuralCodesConvNet) -> None:
        super().__init__()
        self.layers = net.features[:-1]
        self.out_channels = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EfficientNetMap(nn.Module):
    """EfficientNet-Lite0's last feature map (after conv_head + BN + ReLU6) of upsampled images."""

    def __init__(self, net: EfficientNetLite0Features) -> None:
        super().__init__()
        self.net = net
        self.out_channels = net.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.net.forward_features(self.net.prepare(x))


@dataclass
class Base:
    name: str  # convnet | resnet18 | tiny | efficientnet_lite0
    feature_map: nn.Module  # [0, 1] images -> (B, C, H, W), non-negative
    classifier: nn.Module | None  # forward_features(x, code_layers); None for a pretrained base
    code_layers: tuple[str, ...]  # its classification codes
    dataset: Dataset
    split: Split
    images: DeviceImages
    device: torch.device
    saw_held_out: bool  # whether the weights were trained on images of the held-out classes
    run: Run | None

    @property
    def label(self) -> str:
        """How tables name the network."""
        return _LABELS.get(self.name, self.name)

    @property
    def map_name(self) -> str:
        """How tables name its last feature map."""
        return _MAPS.get(self.name, "conv")

    @property
    def labels(self) -> np.ndarray:
        """In-domain labels 0 .. n_in_domain - 1 (held-out images: -1): all that training may read."""
        return self.split.in_domain_labels(self.dataset.train.labels)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run": str(self.run.root) if self.run else None,
            "saw_held_out": self.saw_held_out,
            "channels": int(self.feature_map.out_channels),
        }


def pretrained_base(name: str, like: Base, image_size: int = 128) -> Base:
    """ImageNet weights (``efficientnet_lite0``) on the data, split and images of another base."""
    if name not in PRETRAINED_BASES:
        raise ValueError(
            f"unknown pretrained base {name!r}; choose one of {', '.join(PRETRAINED_BASES)}"
        )
    net = EfficientNetLite0Features(pretrained=True, image_size=image_size)
    fmap = EfficientNetMap(net).to(like.device, memory_format=torch.channels_last).eval()
    return Base(
        name, fmap, None, (), like.dataset, like.split, like.images, like.device, True, None
    )


def open_base(
    spec: str,
    dataset: Dataset | None = None,
    device: str | None = None,
    data: str | None = None,
    split_options: Any = None,
    image_size: int = 128,
) -> Base:
    """The base ``spec`` names: a classifier run folder, or a pretrained name with ``split_options``
    (an object with ``split_seed``, ``n_ood``, ``ood_classes``, ``skip_corrupt``, e.g. a TunedConfig)."""
    if spec in PRETRAINED_BASES:
        if split_options is None:
            raise ValueError(
                f"a pretrained base ({spec}) needs the split options (split seed, held-out classes)"
            )
        dev = pick_device(device)
        dataset = dataset if dataset is not None else _load(data, split_options.skip_corrupt)
        split = make_split(split_options, dataset)
        images = DeviceImages(dataset.train.images, dev)
        like = Base(spec, nn.Identity(), None, (), dataset, split, images, dev, True, None)
        return pretrained_base(spec, like, image_size)
    run = Run(spec)
    kind = run.config("neuralcodes train").get("kind")
    if kind in ("neural_codes", "classify"):
        p, _ = open_trained(run, dataset, device, data)
        return Base(
            "convnet",
            ConvNetConv5(p.model),
            p.model,
            ("L5", "L6", "L7"),
            p.dataset,
            p.split,
            p.images,
            p.device,
            False,
            run,
        )
    if kind == "tuned_classifier":
        p, cfg = open_map_classifier(run, dataset, device, data)
        return Base(
            cfg.arch,
            p.model.features,
            p.model,
            ("pool",),
            p.dataset,
            p.split,
            p.images,
            p.device,
            False,
            run,
        )
    raise ValueError(
        f"{run.root} is a {kind!r} run; fine-tuning starts from a classifier run (`neuralcodes train` or "
        f"`neuralcodes tuned classifier`) or from one of {', '.join(PRETRAINED_BASES)}"
    )


def _load(spec: str | None, skip_corrupt: bool) -> Dataset:
    from neuralcodes.data.sources import load_dataset

    return load_dataset(spec, skip_corrupt=skip_corrupt)
