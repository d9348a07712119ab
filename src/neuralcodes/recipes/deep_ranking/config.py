"""Deep ranking's configuration (Wang et al., CVPR 2014): everything that defines a run, saved as RUN/config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neuralcodes.config import MAX_IMAGE_SIZE, RunConfig, option, register_config
from neuralcodes.learning.miners import get_miner
from neuralcodes.learning.optimizers import OPTIMIZERS


@register_config
@dataclass
class RankConfig(RunConfig):
    kind: ClassVar[str] = "deep_ranking"
    made_by: ClassVar[str] = "neuralcodes rank train"
    aliases: ClassVar[tuple[str, ...]] = ("rank",)
    at_least_one: ClassVar[tuple[str, ...]] = (
        "batch_size",
        "epochs",
        "triplets_per_epoch",
        "eval_triplets",
        "embedding_dim",
        "image_size",
        "feature_batch_size",
    )
    positive: ClassVar[tuple[str, ...]] = ("gap", "lr")

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None  # local weight file (or, for convnet, a `neuralcodes train` run)
    freeze_backbone: bool = True  # frozen: backbone features are cached once, only the head trains
    multiscale: bool = True  # the paper's two shallow branches on 4x / 8x down-sampled images
    image_size: int = 128  # the backbone's input side (images are upsampled to it)
    embedding_dim: int = 128
    head_hidden: int = 0  # 0: the paper's linear head; > 0: one hidden ReLU layer of this width
    gap: float = 1.0  # the hinge's gap g (the paper uses 1.0)
    squared_distance: bool = (
        False  # D squared in the loss and the miners (the paper's choice); default plain D
    )
    mining: str = "random"  # random | semihard | hard | batch_hard (in-batch, learning/miners.py)
    optimizer: str = "adam"
    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 10
    triplets_per_epoch: int = 100_000
    eval_triplets: int = 10_000  # fixed train / test triplets for similarity precision
    bf16: bool = True
    device: str | None = None
    feature_batch_size: int = 256

    def validate(self) -> "RankConfig":
        super().validate()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        get_miner(self.mining)
        # torch's own refusal ("Invalid weight_decay value") names no option; a negative hidden width silently
        # meant the linear head.
        for name in ("weight_decay", "head_hidden"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must not be negative, got {getattr(self, name)} ({option(name)})"
                )
        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size {self.image_size} ({option('image_size')}) is larger than {MAX_IMAGE_SIZE}: the images "
                "are upsampled to it, and beyond that only memory runs out"
            )
        return self
