"""Configurations of the retrieval-tuned-codes recipe, saved whole as RUN/config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neuralcodes.config import MAX_IMAGE_SIZE, RunConfig, option, register_config
from neuralcodes.layers.pooling import POOLINGS
from neuralcodes.learning.optimizers import OPTIMIZERS
from neuralcodes.models.resnet import ARCHS
from neuralcodes.recipes.neural_codes.config import ClassifyConfig

PRETRAINED_BASES = ("efficientnet_lite0",)  # bases that are no run folder: ImageNet weights
WHITENINGS = ("none", "pca", "learned")
LOSSES = ("triplet", "contrastive")
MININGS = ("semihard", "hard", "all")
DEFAULT_MARGINS = {
    "triplet": 0.1,
    "contrastive": 0.7,
}  # cirtorch's contrastive margin for small networks


@register_config
@dataclass
class ClassifierConfig(ClassifyConfig):
    """A classifier of the in-domain classes with an exposed last conv map (ResNet-18 for 64x64 inputs).

    The course's recipe (Adam with AMSGrad, early stopping on validation loss keeping the best
    epoch), with the defaults a ResNet trained from scratch wants: a larger learning rate, crop +
    flip augmentation, and two epochs of patience because augmented validation loss is noisy.
    """

    kind: ClassVar[str] = "tuned_classifier"
    made_by: ClassVar[str] = "neuralcodes tuned classifier"
    aliases: ClassVar[tuple[str, ...]] = ()
    code_layers: ClassVar[tuple[str, ...]] = ("pool",)

    arch: str = "resnet18"
    select_layer: str = "pool"
    lr: float = 1e-3
    augment: bool = True
    patience: int = 2

    def validate(self) -> ClassifierConfig:
        super().validate()
        if self.arch not in ARCHS:
            raise ValueError(
                f"unknown architecture {self.arch!r} ({option('arch')}); choose one of {', '.join(ARCHS)}"
            )
        return self


@register_config
@dataclass
class TunedConfig(RunConfig):
    """Fine-tuning a classifier's last conv map for retrieval: GeM (+ whitening) + L2, metric-learning loss."""

    kind: ClassVar[str] = "tuned_codes"
    made_by: ClassVar[str] = "neuralcodes tuned train"
    seeds: ClassVar[tuple[str, ...]] = ("seed", "split_seed")
    at_least_one: ClassVar[tuple[str, ...]] = (
        "m_per_class",
        "batch_size",
        "batches_per_epoch",
        "epochs",
        "val_images",
        "whiten_images",
        "eval_batch_size",
        "image_size",
    )
    positive: ClassVar[tuple[str, ...]] = ("lr", "p")

    base: str = ""  # a classifier run folder (`neuralcodes train` / `neuralcodes tuned classifier`) or efficientnet_lite0
    image_size: int = 128  # efficientnet_lite0 only: images are upsampled to this side
    # The split, for a pretrained base only (a run base brings its own data and split).
    split_seed: int = 42
    n_ood: int = 10
    ood_classes: list[str] | None = None
    skip_corrupt: bool = False

    pooling: str = "gem"
    p: float = 3.0
    learn_p: bool = True
    whitening: str = (
        "none"  # a linear layer after pooling, fitted on in-domain training codes, then fine-tuned
    )
    whiten_dim: int | None = None  # None: as many as the pooled code
    whiten_images: int = 5000  # in-domain training images the whitening is fitted on

    loss: str = "triplet"
    margin: float | None = None  # None: 0.1 for triplet, 0.7 for contrastive
    # In-batch: all = every triplet (pair) of the batch, the loss averaging those that violate the margin (the hard
    # and semi-hard ones, pytorch-metric-learning's default); semihard / hard = only those the miner picks. On the
    # sample, all reached validation mAP 0.170 in 8 epochs where semihard reached 0.137 (docs/results/tuned_codes_sample.md).
    mining: str = "all"
    m_per_class: int = 4
    batch_size: int = 120  # m_per_class images of batch_size / m_per_class classes
    batches_per_epoch: int = 200
    epochs: int = 10
    patience: int = 2  # epochs without a better validation mAP before stopping
    optimizer: str = "adam"
    lr: float = 1e-4  # the network; GeM's p and the whitening learn at 10x, as in cirtorch
    weight_decay: float = 1e-6
    augment: bool = False  # random resized crop, flip, small rotation and tilt, colour jitter
    freeze_bn: bool = (
        True  # batch-norm statistics stay those of the classifier (batches of few classes)
    )

    val_images: int = 2000  # in-domain validation images scored leave-one-out after every epoch
    eval_batch_size: int = 256
    bf16: bool = True
    device: str | None = None

    @property
    def resolved_margin(self) -> float:
        return DEFAULT_MARGINS[self.loss] if self.margin is None else self.margin

    def validate(self) -> TunedConfig:
        super().validate()
        if not self.base:
            raise ValueError(
                f"no base to fine-tune ({option('base')}): give a classifier run folder or one of {', '.join(PRETRAINED_BASES)}"
            )
        for name, value, choices in (
            ("pooling", self.pooling, POOLINGS),
            ("whitening", self.whitening, WHITENINGS),
            ("loss", self.loss, LOSSES),
            ("mining", self.mining, MININGS),
            ("optimizer", self.optimizer, tuple(OPTIMIZERS)),
        ):
            if value not in choices:
                raise ValueError(
                    f"unknown {name} {value!r} ({option(name)}); choose one of {', '.join(choices)}"
                )
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} ({option('batch_size')}) must be a multiple of m_per_class "
                f"{self.m_per_class} ({option('m_per_class')}): a batch holds m images of each of its classes"
            )
        if self.batch_size // self.m_per_class < 2:
            raise ValueError(
                f"a batch needs at least 2 classes for negatives: raise {option('batch_size')} to at least {2 * self.m_per_class}"
            )
        if self.m_per_class < 2:
            raise ValueError(
                f"m_per_class must be at least 2 so each image has a positive in its batch ({option('m_per_class')})"
            )
        if self.margin is not None and not self.margin > 0:
            raise ValueError(f"margin must be positive, got {self.margin} ({option('margin')})")
        if self.whiten_dim is not None and self.whiten_dim < 1:
            raise ValueError(
                f"whiten_dim must be positive, got {self.whiten_dim} ({option('whiten_dim')})"
            )
        if self.whiten_dim is not None and self.whitening == "none":
            raise ValueError(
                f"{option('whiten_dim')} needs a whitening: add --whitening pca or --whitening learned"
            )
        for name in ("patience", "split_seed", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must not be negative, got {getattr(self, name)} ({option(name)})"
                )
        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size {self.image_size} ({option('image_size')}) is larger than {MAX_IMAGE_SIZE}"
            )
        return self
