"""The course recipe's configuration: the Babenko et al. ConvNet trained as a classifier of the in-domain classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neuralcodes.config import RunConfig, option, register_config


@register_config
@dataclass
class ClassifyConfig(RunConfig):
    kind: ClassVar[str] = "neural_codes"
    made_by: ClassVar[str] = "neuralcodes train"
    seeds: ClassVar[tuple[str, ...]] = ("seed", "split_seed")
    aliases: ClassVar[tuple[str, ...]] = ("classify",)
    at_least_one: ClassVar[tuple[str, ...]] = ("batch_size", "epochs", "eval_batch_size", "n_ood")
    positive: ClassVar[tuple[str, ...]] = ("lr",)
    code_layers: ClassVar[tuple[str, ...]] = (
        "L5",
        "L6",
        "L7",
    )  # scored on the class-disjoint validation classes

    split_seed: int = 42  # the course split's np.random.seed
    n_ood: int = 10  # the last n_ood classes are held out for retrieval ...
    ood_classes: list[str] | None = (
        None  # ... unless these are named (folder names / wnids / class names)
    )
    batch_size: int = 100
    lr: float = 1e-4
    epochs: int = 100
    patience: int = 0  # early stopping: stop as soon as the validation loss rises
    weight_decay: float = 0.0
    augment: bool = False  # random crop (pad 4) + horizontal flip
    batch_norm: bool = False
    dropout: float = 0.5
    bf16: bool = True  # bf16 autocast (CPU with AVX-512-BF16, or CUDA)
    device: str | None = None  # None: CUDA when present, else CPU
    eval_batch_size: int = 500
    skip_corrupt: bool = False
    # The better-trained network (issue 20): optimiser, schedule and smoothing; the defaults are the course's.
    optimizer: str = "adam_amsgrad"  # a name of learning.optimizers.OPTIMIZERS
    schedule: str = "constant"  # or "cosine": to 0 over the run's epochs, after a linear warm-up
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # Class-disjoint validation: in-domain classes never trained on; their leave-one-out mAP picks the epoch.
    n_val_classes: int = 0
    val_class_images: int = 250  # images a class scored each epoch (the held-out protocol's 500 queries a class, halved)
    select_layer: str = "L7"  # the code whose class-disjoint mAP selects the epoch

    def validate(self) -> "ClassifyConfig":
        super().validate()
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout} (option --dropout)")
        if self.ood_classes is not None and len(self.ood_classes) != self.n_ood:
            raise ValueError(
                f"{len(self.ood_classes)} held-out classes named (option --ood-classes) but n_ood is {self.n_ood} "
                "(option --n-ood): give one of them, or make them agree"
            )
        from neuralcodes.learning.optimizers import OPTIMIZERS
        from neuralcodes.learning.schedules import SCHEDULES

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r} (option --optimizer); choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r} (option --schedule); choose one of {', '.join(SCHEDULES)}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing} (option --label-smoothing)"
            )
        if self.val_class_images < 2:
            raise ValueError(
                f"val_class_images must be at least 2 (leave-one-out), got {self.val_class_images} (option --val-class-images)"
            )
        if self.select_layer not in self.code_layers:
            raise ValueError(
                f"select_layer must be one of {', '.join(self.code_layers)}, got {self.select_layer!r} "
                "(option --select-layer)"
            )
        for name in ("patience", "split_seed", "weight_decay", "warmup_epochs", "n_val_classes"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must not be negative, got {getattr(self, name)} ({option(name)})"
                )
        return self
