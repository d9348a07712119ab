import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import EmbeddingsAlreadyPackagedAsTriplets
from pytorch_metric_learning.reducers import MeanReducer

from neuralcodes.learning.losses import (
    ExactLpDistance,
    packed_triplets,
    triplet_distance,
    triplet_loss,
    triplet_ranking_loss,
)


def _triplets(b=64, d=16, seed=0, normalise=True):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(b, d, generator=g) for _ in range(3)]
    return [F.normalize(x, dim=1) for x in t] if normalise else t


def _naive(q, p, n, gap=1.0, squared=False):
    power = 2 if squared else 1
    return [max(0.0, gap + math.dist(a, b) ** power - math.dist(a, c) ** power)
            for a, b, c in zip(q.tolist(), p.tolist(), n.tolist())]


def test_hand_computed_example():
    q = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.5]])  # D = 5, 0.5
    n = torch.tensor([[0.0, 1.0], [1.0, 3.0]])  # D = 1, 3
    # max(0, 1 + 5 - 1) = 5; max(0, 1 + 0.5 - 3) = 0
    assert triplet_ranking_loss(q, p, n, gap=1.0, reduction="none").tolist() == pytest.approx([5.0, 0.0])
    assert triplet_ranking_loss(q, p, n).item() == pytest.approx(2.5)  # the mean counts the zero triplet
    assert triplet_ranking_loss(q, p, n, gap=2.0, reduction="sum").item() == pytest.approx(6.0)
    assert triplet_ranking_loss(q, p, n, gap=3.0, reduction="none")[1].item() == pytest.approx(0.5)
    # Squared D: max(0, 1 + 25 - 1) = 25; max(0, 1 + 0.25 - 9) = 0.
    assert triplet_ranking_loss(q, p, n, squared=True, reduction="none").tolist() == pytest.approx([25.0, 0.0])
    # The same loss in pml's calling convention: [anchors; positives; negatives] and their rows.
    assert triplet_loss(1.0)(torch.cat([q, p, n]), indices_tuple=packed_triplets(2)).item() == pytest.approx(2.5)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("normalise", [True, False])
def test_matches_a_naive_loop(squared, normalise):
    q, p, n = _triplets(normalise=normalise)
    gap = 0.2 if normalise else 1.0
    ours = triplet_ranking_loss(q, p, n, gap=gap, squared=squared, reduction="none")
    naive = _naive(q, p, n, gap, squared)
    assert 0 < sum(v == 0 for v in naive) < len(naive)  # both sides of the hinge occur
    assert ours.tolist() == pytest.approx(naive, abs=1e-4)
    mean = triplet_ranking_loss(q, p, n, gap=gap, squared=squared)
    assert mean.item() == pytest.approx(sum(naive) / len(naive), abs=1e-5)


def test_mean_over_all_triplets_not_over_the_active_ones():
    # pml's default reducer (AvgNonZeroReducer) would divide by the 2 active triplets: (5 + 1) / 2 = 3.
    q = torch.zeros(3, 2)
    p = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.5]])  # D = 5, 1, 0.5
    n = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 4.0]])  # D = 1, 1, 4 -> losses 5, 1, 0
    assert triplet_ranking_loss(q, p, n).item() == pytest.approx(6.0 / 3)


def test_agrees_with_pml_used_directly():
    # An independent route through pml: triplets interleaved (q0, p0, n0, q1, ...), its packaging miner,
    # its LpDistance. On random data (no near-identical points) its cdist shortcut is accurate.
    q, p, n = _triplets(b=40, seed=3)
    reference = TripletMarginLoss(margin=0.7, distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer())
    interleaved = torch.stack([q, p, n], dim=1).reshape(-1, q.shape[1])
    expected = reference(interleaved, indices_tuple=EmbeddingsAlreadyPackagedAsTriplets()(interleaved, torch.zeros(120)))
    assert triplet_ranking_loss(q, p, n, gap=0.7).item() == pytest.approx(expected.item(), abs=1e-5)


def test_distance_of_identical_embeddings_is_exactly_zero():
    # 64 rows: above the 25 rows where torch.cdist switches to |x|^2 + |y|^2 - 2x.y (D(x, x) ~ 1e-3 in
    # float32), and F.triplet_margin_loss would add eps = 1e-6 per coordinate (~8e-6 over 64 dims).
    q, _, n = _triplets(b=64, d=64, seed=1)
    d = ExactLpDistance(normalize_embeddings=False)(torch.cat([q, q.clone()]))
    assert torch.equal(d[torch.arange(64), torch.arange(64) + 64], torch.zeros(64))
    assert torch.equal(d.diagonal(), torch.zeros(128))
    # So the loss with p = q is exactly the hinge on D(q, n) alone (gap 3 > every D(q, n) of unit vectors).
    ours = triplet_ranking_loss(q, q.clone(), n, gap=3.0, reduction="none").double()
    expected = torch.tensor([3.0 - math.dist(a, c) for a, c in zip(q.tolist(), n.tolist())], dtype=torch.float64)
    assert (ours - expected).abs().max().item() < 1e-6


def test_the_loss_and_the_miners_share_one_distance():
    plain, squared = triplet_distance(), triplet_distance(squared=True)
    assert isinstance(plain, ExactLpDistance) and not plain.normalize_embeddings
    assert plain.power == 1 and squared.power == 2
    loss = triplet_loss(0.5, squared=True)
    assert isinstance(loss.distance, ExactLpDistance) and loss.distance.power == 2 and loss.margin == 0.5
    assert isinstance(loss.reducer, MeanReducer)


def test_gradient_is_finite_for_identical_points():
    q = torch.zeros(1, 3, requires_grad=True)
    triplet_ranking_loss(q, q.detach().clone(), torch.ones(1, 3)).backward()
    assert torch.isfinite(q.grad).all()
    x = torch.randn(30, 4, requires_grad=True)
    triplet_ranking_loss(x, x, x.detach().flip(0), squared=True).backward()  # D(x, x) = 0 in every row
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("gap", [0.0, -1.0, float("nan")])
def test_non_positive_gap_rejected(gap):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="gap must be positive"):
        triplet_ranking_loss(x, x, x, gap=gap)
    with pytest.raises(ValueError, match="gap must be positive"):
        triplet_loss(gap)


def test_shape_and_reduction_errors():
    with pytest.raises(ValueError, match="one shape"):
        triplet_ranking_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        triplet_ranking_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), reduction="max")
