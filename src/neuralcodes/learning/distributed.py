"""Training on several processes (torchrun + DistributedDataParallel): NCCL on GPUs, gloo on CPU.

``torchrun --nproc_per_node N ...`` (or ``--nnodes`` with a rendezvous for several machines) sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`init_world` joins the process group. Every process
follows the first process's plan of the epoch (:func:`from_main`) and takes its shard of each global
batch, so ``batch_size`` stays the *global* batch: the gradient DDP averages over processes is the one a
single process computes on the whole batch (exactly, up to float summation order, when shards are equal).
Augmentation and dropout draw from each process's own stream (:func:`process_seed`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.size) if self.size > 1 else None


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (if any); each GPU process gets its own device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device


def distribute(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """``model`` wrapped for training on every process (itself on one). On GPUs batch norm becomes
    SyncBatchNorm, so its statistics are the global batch's, as on one process; on CPU (gloo, where
    PyTorch has no SyncBatchNorm) each process normalises by its own shard's statistics, so a network
    with batch norm trains slightly differently from one process with the same global batch."""
    if world.size == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
            model
        )  # replaces the children in place
    return torch.nn.parallel.DistributedDataParallel(model)


def process_seed(seed: int, world: World) -> int:
    """The seed of this process's own random streams (augmentation, dropout): processes must not draw the
    same crops and masks for their different images. The first process keeps the run's seed, so one
    process draws exactly what it always did."""
    return seed + 7919 * world.rank


def sum_over(world: World, *values: float, device: torch.device | None = None) -> list[float]:
    """Element-wise sums of ``values`` over all processes (the values themselves on one process)."""
    if world.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_over(world: World, *flags: bool, device: torch.device | None = None) -> list[bool]:
    """Element-wise OR of ``flags`` over all processes: every process takes the same decision."""
    return [v > 0 for v in sum_over(world, *map(float, flags), device=device)]


def gather(world: World, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (picklable objects, e.g. RNG states)."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def gather_rows(world: World, rows: torch.Tensor) -> torch.Tensor:
    """Every process's ``rows`` concatenated in rank order, without gradient (figures of a whole batch, e.g.
    :func:`neuralcodes.learning.diagnostics.triplet_diagnostics`); shards may differ in length by some rows."""
    if world.size == 1:
        return rows.detach()
    sizes = torch.zeros(world.size, dtype=torch.int64, device=rows.device)
    sizes[world.rank] = len(rows)
    dist.all_reduce(sizes)
    padded = rows.detach().new_zeros((int(sizes.max()), *rows.shape[1:]))
    padded[: len(rows)] = rows.detach()
    out = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([part[: int(k)] for part, k in zip(out, sizes.tolist())])


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def from_main(world: World, compute: Callable[[], T]) -> T:
    """``compute()`` on the first process only, its result handed to every process (work that every
    process would otherwise repeat identically, e.g. a validation mAP over codes of the whole set)."""
    if world.size == 1:
        return compute()
    box = [compute() if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]
