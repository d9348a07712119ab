"""What a batch's triplets look like, beside the loss a reducer makes of them: is the network learning?

A loss averaged over the violating triplets only (pml's ``AvgNonZeroReducer``, the tuned recipe's
choice) tends to the gap g in two very different situations: the embedding collapsed (D(a, p) = D(a, n)
for every triplet: all of them cost exactly g), or training satisfies ever more triplets and the ones left
violating sit just inside the gap. :func:`triplet_diagnostics` tells them apart, over *every* (a, p, n) of a
labelled batch (p != a of a's class, n of another class; what pml's loss forms without a miner):

    active    fraction of the triplets with g + D(a, p) - D(a, n) > 0 (those the loss trains on)
    loss_all  the hinge averaged over all triplets (``MeanReducer``'s figure; = active x the active mean)
    d_ap      mean D(a, p)        d_an  mean D(a, n)        gap  mean D(a, n) - D(a, p) (> g: all satisfied)
    spread    mean D between two rows of the batch (0 when every code is the same point)

Cost: one n x n distance matrix and a sort of its rows, O(n^2 log n) for a batch of n codes, not the
O(n^3) triplets: per (anchor, positive), the negatives inside the gap are counted by a binary search in the
anchor's sorted negative distances, and their distances summed by the prefix sums of that row.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance

from neuralcodes.learning.losses import check_gap, triplet_distance

FIGURES = ("active", "loss_all", "d_ap", "d_an", "gap", "spread")


@torch.no_grad()
def triplet_diagnostics(
    embeddings: torch.Tensor, labels: torch.Tensor, gap: float, distance: BaseDistance | None = None
) -> dict[str, float]:
    """The :data:`FIGURES` of every triplet of the batch ``(embeddings, labels)`` for a loss with gap ``gap``;
    ``distance``: the loss's own (default :func:`~neuralcodes.learning.losses.triplet_distance`)."""
    gap = check_gap(gap)
    distance = distance if distance is not None else triplet_distance()
    z = embeddings.detach()
    n = len(z)
    d = distance(z).double()  # float64: sums over up to n^3 triplets
    labels = labels.to(z.device).view(-1)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos, neg = same & ~eye, ~same
    n_pos, n_neg = pos.sum(1).double(), neg.sum(1).double()
    triplets = float((n_pos * n_neg).sum())
    spread = float(d[~eye].mean()) if n > 1 else 0.0
    if (
        triplets == 0
    ):  # no anchor has both a positive and a negative: nothing the loss could train on
        nan = float("nan")
        return {
            "active": nan,
            "loss_all": nan,
            "d_ap": nan,
            "d_an": nan,
            "gap": nan,
            "spread": spread,
        }
    # Per anchor: its negatives' distances in ascending order (the other columns pushed to the end),
    # with prefix sums; cumsum[k] = the sum of its k nearest negatives.
    sorted_neg = torch.where(neg, d, torch.inf).sort(dim=1).values
    prefix = torch.cat(
        [d.new_zeros(n, 1), torch.nan_to_num(sorted_neg, posinf=0.0).cumsum(1)], dim=1
    )
    threshold = d + gap  # (a, p): a negative n violates iff D(a, n) < D(a, p) + g
    inside = torch.searchsorted(
        sorted_neg.contiguous(), threshold.contiguous(), right=False
    )  # strictly below
    inside = torch.where(pos, inside, 0)
    hinge = torch.where(pos, inside * threshold - prefix.gather(1, inside), 0.0)
    d_ap = (
        float((d * pos).sum(1).mul(n_neg).sum()) / triplets
    )  # each positive pair is in n_neg(a) triplets
    d_an = float((d * neg).sum(1).mul(n_pos).sum()) / triplets
    return {
        "active": float(inside.sum()) / triplets,
        "loss_all": float(hinge.sum()) / triplets,
        "d_ap": d_ap,
        "d_an": d_an,
        "gap": d_an - d_ap,
        "spread": spread,
    }
