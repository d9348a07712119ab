"""Run configuration as plain data: every run saves its config (seeds included) as JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class ClassifyConfig:
    """The course recipe (Babenko et al. ConvNet trained as a classifier of the in-domain classes)."""

    data: str | None = None  # None: the embedded sample; a path, URL or "tiny-imagenet"
    split_seed: int = 42  # the course split's np.random.seed
    n_ood: int = 10  # the last n_ood classes are held out for retrieval
    seed: int = 0  # weight init, shuffling, dropout and augmentation
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ClassifyConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def validate(self) -> "ClassifyConfig":
        for name in ("batch_size", "epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        return self
