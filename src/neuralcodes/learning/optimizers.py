"""Optimisers by name (a registry, so a config names one as plain data)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    # The course recipe: Adam with the AMSGrad fix, as the reference Keras notebook trains.
    "adam_amsgrad": lambda params, lr, wd: torch.optim.Adam(
        params, lr=lr, amsgrad=True, weight_decay=wd
    ),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
}


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Optimiser ``name`` over the trainable ``params``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]([p for p in params if p.requires_grad], lr, weight_decay)
