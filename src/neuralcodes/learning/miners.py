"""Negative mining: replace each triplet's random negative by one chosen by distance.

The candidate pool is the batch itself (every query, positive and negative embedding of the
batch with its label), a simplification of the paper's online sampling from a buffer. A miner
returns, per query, the index into the pool of its negative, or -1 to keep the sampled one.

- ``random``: keep the sampled negative (the baseline).
- ``hard``: the closest candidate of another class.
- ``semihard``: the closest candidate of another class that is still farther than the positive,
  D(q, p) < D(q, c) (FaceNet); hard negatives from the first step can collapse the embedding.
  Queries without such a candidate keep their sampled negative.
"""
from __future__ import annotations

import abc

import torch


class Miner(abc.ABC):
    """Chooses, per query, the pool index of its negative (-1: keep the sampled one)."""

    name = "base"

    @abc.abstractmethod
    def __call__(
        self, query: torch.Tensor, positive: torch.Tensor, query_labels: torch.Tensor,
        pool: torch.Tensor, pool_labels: torch.Tensor,
    ) -> torch.Tensor: ...


class RandomNegatives(Miner):
    name = "random"

    def __call__(self, query, positive, query_labels, pool, pool_labels):  # type: ignore[override]
        return torch.full((len(query),), -1, dtype=torch.long, device=query.device)


def _distances(query: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    return torch.cdist(query.detach().float(), pool.detach().float())


class HardNegatives(Miner):
    name = "hard"

    def __call__(self, query, positive, query_labels, pool, pool_labels):  # type: ignore[override]
        d = _distances(query, pool)
        d = d.masked_fill(query_labels[:, None] == pool_labels[None, :], float("inf"))
        best = d.argmin(dim=1)
        return torch.where(torch.isinf(d.gather(1, best[:, None]))[:, 0], torch.full_like(best, -1), best)


class SemiHardNegatives(Miner):
    name = "semihard"

    def __call__(self, query, positive, query_labels, pool, pool_labels):  # type: ignore[override]
        d = _distances(query, pool)
        d_pos = torch.linalg.vector_norm(query.detach().float() - positive.detach().float(), dim=1)
        allowed = (query_labels[:, None] != pool_labels[None, :]) & (d > d_pos[:, None])
        d = d.masked_fill(~allowed, float("inf"))
        best = d.argmin(dim=1)
        return torch.where(allowed.any(dim=1), best, torch.full_like(best, -1))


MINERS: dict[str, type[Miner]] = {m.name: m for m in (RandomNegatives, HardNegatives, SemiHardNegatives)}


def get_miner(name: str) -> Miner:
    if name not in MINERS:
        raise ValueError(f"unknown mining {name!r}; choose one of {', '.join(MINERS)}")
    return MINERS[name]()


def mine_negatives(
    miner: Miner, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
    query_labels: torch.Tensor, negative_labels: torch.Tensor,
) -> torch.Tensor:
    """The negatives to train on: the batch pool is (queries, positives, negatives) with labels."""
    pool = torch.cat([query, positive, negative])
    pool_labels = torch.cat([query_labels, query_labels, negative_labels])
    choice = miner(query, positive, query_labels, pool, pool_labels)
    keep = choice < 0
    # Gather from the pool keeps the gradient flowing into whichever branch produced the negative.
    chosen = pool[choice.clamp_min(0)]
    return torch.where(keep[:, None], negative, chosen)
