"""The triplet hinge loss  l(a, p, n) = max(0, g + D(a, p) - D(a, n))  and the contrastive loss, from
pytorch-metric-learning: every recipe builds its loss here, never from pml directly.

:func:`triplet_loss` is pml's ``TripletMarginLoss`` with three choices stated, not left to pml's defaults:

- D is the Euclidean distance between the embeddings as given (``normalize_embeddings=False``: our
  networks end in an L2 normalisation already, and a loss that re-normalised would hide a network
  that does not); ``squared=True`` gives the paper's squared distance instead.
- The reduction is the mean over *all* triplets (``"mean"``, ``MeanReducer``), the paper's objective, unless a
  recipe names another. pml's default, ``"active"`` (``AvgNonZeroReducer``), divides by the number of triplets
  that still violate the gap, so the step size grows as training satisfies triplets and the logged loss stops
  being comparable between epochs (it tends to g whatever the network learns: "Why the loss sits at the
  margin" in :mod:`neuralcodes.recipes.tuned_codes.train`); a recipe that wants it says so and logs
  :func:`neuralcodes.learning.diagnostics.triplet_diagnostics` beside it.
- D is computed exactly (:class:`ExactLpDistance`).

:func:`contrastive_loss` is pml's ``ContrastiveLoss``  max(0, D(a, p) - m+)  +  max(0, m- - D(a, n))  over the
same D, its reducer named too (pml reduces the positive and the negative pairs separately and adds the two).

Calling convention (pml's): ``loss(embeddings, labels, indices_tuple)`` with ``indices_tuple`` the
(anchor, positive, negative) rows of the triplets, from a miner or from :func:`packed_triplets`.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, TripletMarginLoss
from pytorch_metric_learning.reducers import (
    AvgNonZeroReducer,
    BaseReducer,
    DoNothingReducer,
    MeanReducer,
    SumReducer,
)

# Reductions by name. "active": the mean over the terms with a positive loss only (pml's AvgNonZeroReducer).
REDUCERS: dict[str, type[BaseReducer]] = {
    "mean": MeanReducer,
    "active": AvgNonZeroReducer,
    "sum": SumReducer,
    "none": DoNothingReducer,
}


class ExactLpDistance(LpDistance):
    """pml's ``LpDistance`` without the matrix-product shortcut of ``torch.cdist``.

    For more than 25 rows ``cdist`` computes ||x - y|| as sqrt(|x|^2 + |y|^2 - 2 x.y), whose rounding leaves
    two copies of one unit embedding about 1e-3 apart in float32 (and pml's float16 path adds
    ``pairwise_distance``'s eps = 1e-6 to every coordinate). The direct form keeps D(x, x) = 0 exactly and
    costs little at batch sizes (tests/learning/test_losses.py shows both).
    """

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None) -> torch.Tensor:
        ref_emb = query_emb if ref_emb is None else ref_emb
        dtype = torch.promote_types(
            query_emb.dtype, torch.float32
        )  # cdist has no half-precision kernel on CPU
        return torch.cdist(
            query_emb.to(dtype),
            ref_emb.to(dtype),
            p=self.p,
            compute_mode="donot_use_mm_for_euclid_dist",
        )

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(query_emb - ref_emb, ord=self.p, dim=-1)


def check_gap(gap: float) -> float:
    gap = float(gap)
    if not gap > 0:  # also rejects NaN
        raise ValueError(f"the triplet gap must be positive (the paper uses 1.0), got {gap}")
    return gap


def triplet_distance(squared: bool = False) -> ExactLpDistance:
    """D of the loss and of the miners: Euclidean (the default) or its square (the paper's choice)."""
    return ExactLpDistance(normalize_embeddings=False, p=2, power=2 if squared else 1)


def make_reducer(reducer: str | BaseReducer) -> BaseReducer:
    """A pml reducer by name (:data:`REDUCERS`), or ``reducer`` itself when it already is one."""
    if isinstance(reducer, BaseReducer):
        return reducer
    if reducer not in REDUCERS:
        raise ValueError(f"unknown reducer {reducer!r}; choose one of {', '.join(REDUCERS)}")
    return REDUCERS[reducer]()


def triplet_loss(
    gap: float = 1.0, squared: bool = False, reducer: str | BaseReducer = "mean"
) -> TripletMarginLoss:
    """pml's triplet margin loss with gap ``gap`` over D = :func:`triplet_distance`; by default the mean over
    all triplets (``reducer``: a name of :data:`REDUCERS` or a pml reducer)."""
    return TripletMarginLoss(
        margin=check_gap(gap), distance=triplet_distance(squared), reducer=make_reducer(reducer)
    )


def contrastive_loss(
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    squared: bool = False,
    reducer: str | BaseReducer = "mean",
) -> ContrastiveLoss:
    """pml's contrastive loss: positive pairs pay D beyond ``pos_margin``, negative pairs pay ``neg_margin`` - D;
    D = :func:`triplet_distance` (the triplet loss's, so both losses compare the same figures)."""
    pos_margin, neg_margin = float(pos_margin), float(neg_margin)
    if not 0 <= pos_margin < neg_margin:  # also rejects NaN
        raise ValueError(
            f"the contrastive margins need 0 <= pos_margin < neg_margin, got {pos_margin}, {neg_margin}"
        )
    return ContrastiveLoss(
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=triplet_distance(squared),
        reducer=make_reducer(reducer),
    )


def packed_triplets(
    n: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The indices tuple of ``n`` triplets stacked as [anchors; positives; negatives] (3n rows)."""
    i = torch.arange(n, device=device)
    return i, i + n, i + 2 * n


def triplet_ranking_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    gap: float = 1.0,
    squared: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """The loss of explicit triplets (row i of each tensor is one triplet); ``reduction``: 'mean', 'sum', 'none'."""
    if not (query.shape == positive.shape == negative.shape) or query.ndim != 2:
        raise ValueError(
            f"query, positive and negative must be (B, d) of one shape, got "
            f"{tuple(query.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}: use 'mean', 'sum' or 'none'")
    loss = triplet_loss(gap, squared, reduction)
    out = loss(
        torch.cat([query, positive, negative]),
        indices_tuple=packed_triplets(len(query), query.device),
    )
    if reduction != "none":
        return out
    # DoNothingReducer hands back pml's loss dict; an empty batch has no per-triplet tensor in it.
    losses = out["loss"]["losses"]
    return losses if torch.is_tensor(losses) else query.new_zeros(0)
