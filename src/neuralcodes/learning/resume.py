"""What a resumable checkpoint holds on one or several processes: the position inside an epoch, every process's RNG.

Under torchrun the processes share weights, optimiser and history, but not their random streams
(dropout, augmentation) nor their running sums (each trains on its own shard of every batch). The
first process writes one file: its own RNG and position under the top-level ``rng`` / ``in_epoch``,
every other process's under ``ranks`` (rank 1, 2, ...), and ``world_size``; on resume each process
takes its own back, and a file written by another number of processes is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralcodes.learning.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from neuralcodes.learning.distributed import World, gather


@dataclass
class InEpoch:
    """Where training stands inside an epoch: its planned order, the next batch, this process's running sums."""

    epoch: int  # 0-based
    order: np.ndarray  # the epoch's items in batch order (the same on every process)
    next_batch: int = 0
    sums: dict[str, float] = field(
        default_factory=dict
    )  # the step's figures, added up over this process's shards
    steps: int = 0
    seen: int = 0  # items this process trained on
    seconds: float = 0.0  # training time spent in this epoch so far, across interruptions

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "InEpoch":
        """The position a checkpoint holds. The classification loop of before the loops were one kept its
        sums (``loss_sum``, ``correct``) as keys of their own and no step count (one step per batch)."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in state.items() if k in known}
        kept.setdefault("sums", {k: v for k, v in state.items() if k not in known})
        kept.setdefault("steps", kept["next_batch"])
        return cls(**kept)


def save_last(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: World,
    in_epoch: InEpoch | None,
    **extra: Any,
) -> None:
    """Every process's RNG and position go to the first process, which writes them with ``extra``
    (a collective: every process calls it at the same point)."""
    mine = {
        "rng": rng_state(generator),
        "in_epoch": asdict(in_epoch) if in_epoch is not None else None,
    }
    states = gather(world, mine)
    if world.is_main:
        save_checkpoint(
            path,
            model,
            optimizer,
            generator,
            in_epoch=mine["in_epoch"],
            ranks=states[1:],
            world_size=world.size,
            **extra,
        )


def restore_last(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: World,
    upgrade: Callable[[dict], dict] | None = None,
) -> tuple[dict[str, Any], InEpoch | None]:
    """Load weights and optimiser, then this process's RNG; return the payload and this process's position.

    ``upgrade`` turns a recipe's older layout into today's before anything is read from it.
    """
    payload = load_checkpoint(path)
    if upgrade is not None:
        payload = upgrade(payload)
    written = payload.get("world_size", 1)
    if written != world.size:
        raise ValueError(
            f"{path} was written by {written} process(es); resume it with as many (this is {world.size})"
        )
    model.load_state_dict(payload["model"])
    if payload.get("optimizer") is not None:
        optimizer.load_state_dict(payload["optimizer"])
    own = payload if world.is_main else payload["ranks"][world.rank - 1]
    set_rng_state(own["rng"], generator)
    return payload, InEpoch.from_state(own["in_epoch"]) if own.get("in_epoch") else None
