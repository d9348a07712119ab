"""In-batch triplet mining, from pytorch-metric-learning: which (anchor, positive, negative) rows of a
batch of labelled embeddings the loss trains on. Every row of the batch is an anchor candidate.

- ``random``: no miner (``None``): train on the triplets as they were sampled.
- ``semihard``: every triplet of the batch with D(a, p) < D(a, n) <= D(a, p) + g (FaceNet): the negative is
  already farther than the positive but still inside the gap g, so the loss is positive; the hardest
  negatives, which can collapse the embedding early in training, are left out.
- ``hard``: every triplet with D(a, n) <= D(a, p).
- ``batch_hard``: per anchor, its farthest positive and its closest negative (Hermans et al. 2017).

:func:`get_batch_miner` is the same for batches of labelled images (m per class, the tuned recipe), where no
miner means ``all``: the loss forms every (a, p, n) of the batch from the labels itself, and its reducer
decides which of them count.

The miners measure with the loss's D (:func:`neuralcodes.learning.losses.triplet_distance`), so the
semi-hard band is the band of triplets that the loss with that gap and that D still penalises.
Cost: ``semihard`` and ``hard`` enumerate all (a, p, n) of a batch of n rows, O(n^3) time and memory
(measured: about 1 s and 0.5 GB per batch of 768 rows on a 2-core CPU); ``batch_hard`` is O(n^2).
"""

from __future__ import annotations

from pytorch_metric_learning.miners import BaseMiner, BatchHardMiner, TripletMarginMiner

from neuralcodes.learning.losses import check_gap, triplet_distance

MINERS = ("random", "semihard", "hard", "batch_hard")


def get_miner(name: str, gap: float = 1.0, squared: bool = False) -> BaseMiner | None:
    """The pml miner called ``name`` (None for ``random``), for a loss with gap ``gap`` and D squared or not.

    A miner maps ``(embeddings, labels)`` to the indices tuple ``(anchors, positives, negatives)``.
    """
    if name not in MINERS:
        raise ValueError(f"unknown mining {name!r}; choose one of {', '.join(MINERS)}")
    gap = check_gap(gap)
    distance = triplet_distance(squared)
    if name == "semihard":
        return TripletMarginMiner(margin=gap, type_of_triplets="semihard", distance=distance)
    if name == "hard":
        return TripletMarginMiner(margin=gap, type_of_triplets="hard", distance=distance)
    if name == "batch_hard":
        return BatchHardMiner(distance=distance)
    return None


def get_batch_miner(name: str, gap: float = 1.0, squared: bool = False) -> BaseMiner | None:
    """:func:`get_miner` for a labelled batch: ``all`` (None) leaves every triplet of the batch to the loss."""
    return None if name == "all" else get_miner(name, gap, squared)
