"""Early stopping on validation loss, keeping the best epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    """Stop once the monitored loss has failed to improve ``patience + 1`` epochs in a row.

    ``patience=0`` (the course recipe) stops as soon as the validation loss rises; the weights of
    ``best_epoch`` are the ones to keep.
    """

    patience: int = 0
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def step(self, epoch: int, loss: float) -> bool:
        """Record ``loss`` for ``epoch``; return True when it is the best so far."""
        if not math.isfinite(loss):
            # A diverged run must not be kept training on, nor its weights called best.
            self.stopped = True
            return False
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "EarlyStopping":
        return cls(**state)
