import math

import pytest
import torch
import torch.nn.functional as F

from neuralcodes.learning.losses import TripletRankingLoss, triplet_ranking_loss


def test_hand_computed_example():
    q = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.5]])  # D = 5, 0.5
    n = torch.tensor([[0.0, 1.0], [1.0, 3.0]])  # D = 1, 3
    # max(0, 1 + 5 - 1) = 5; max(0, 1 + 0.5 - 3) = 0
    per = triplet_ranking_loss(q, p, n, gap=1.0, reduction="none")
    assert per.tolist() == pytest.approx([5.0, 0.0])
    assert triplet_ranking_loss(q, p, n).item() == pytest.approx(2.5)
    assert TripletRankingLoss(gap=2.0, reduction="sum")(q, p, n).item() == pytest.approx(6.0 + 0.0)
    assert triplet_ranking_loss(q, p, n, gap=3.0, reduction="none")[1].item() == pytest.approx(0.5)


def test_matches_a_naive_loop_and_differs_from_torch_by_eps_only():
    g = torch.Generator().manual_seed(0)
    q, p, n = (F.normalize(torch.randn(64, 16, generator=g), dim=1) for _ in range(3))
    naive = [max(0.0, 1.0 + math.dist(a.tolist(), b.tolist()) - math.dist(a.tolist(), c.tolist())) for a, b, c in zip(q, p, n)]
    ours = triplet_ranking_loss(q, p, n, reduction="none")
    assert ours.tolist() == pytest.approx(naive, abs=1e-5)
    torch_loss = F.triplet_margin_loss(q, p, n, margin=1.0, reduction="none")
    assert (torch_loss - ours).abs().max().item() < 1e-4  # its eps = 1e-6 is added to the difference
    # ... which makes D(x, x) non-zero there and exactly zero here.
    assert F.pairwise_distance(q, q).min().item() > 0
    assert triplet_ranking_loss(q, q, n, reduction="none").tolist() == pytest.approx(
        torch.clamp_min(1.0 - (q - n).norm(dim=1), 0).tolist(), abs=1e-6)


def test_gradient_is_finite_for_identical_points():
    q = torch.zeros(1, 3, requires_grad=True)
    triplet_ranking_loss(q, q.detach().clone(), torch.ones(1, 3)).backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("gap", [0.0, -1.0, float("nan")])
def test_non_positive_gap_rejected(gap):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="gap must be positive"):
        triplet_ranking_loss(x, x, x, gap=gap)
    with pytest.raises(ValueError, match="gap must be positive"):
        TripletRankingLoss(gap)


def test_shape_and_reduction_errors():
    with pytest.raises(ValueError, match="one shape"):
        triplet_ranking_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        triplet_ranking_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), reduction="max")
