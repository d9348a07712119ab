"""Learning-rate schedules by name, stepped once per optimiser step (a registry, so a config names one).

Each maps the step number to a factor of the base learning rate and becomes a ``LambdaLR``, whose
state (the step count) the training loop checkpoints, so a resumed run continues the same curve.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Factor = Callable[[int, int, int], float]  # (step, total steps, warm-up steps) -> factor


def _constant(step: int, total: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def _cosine(step: int, total: int, warmup: int) -> float:
    # Linear warm-up, then half a cosine from 1 to 0 over the remaining steps (Loshchilov & Hutter, no restarts).
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES: dict[str, Factor] = {"constant": _constant, "cosine": _cosine}


def build_schedule(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Schedule ``name`` over ``total_steps`` optimiser steps, the first ``warmup_steps`` rising linearly."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps}, {warmup_steps}"
        )
    factor = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: factor(step, total_steps, warmup_steps)
    )
