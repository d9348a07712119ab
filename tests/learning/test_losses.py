import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import EmbeddingsAlreadyPackagedAsTriplets
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer

from neuralcodes.learning.losses import (
    ExactLpDistance,
    contrastive_loss,
    make_reducer,
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
    return [
        max(0.0, gap + math.dist(a, b) ** power - math.dist(a, c) ** power)
        for a, b, c in zip(q.tolist(), p.tolist(), n.tolist())
    ]


def test_hand_computed_example():
    q = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.5]])  # D = 5, 0.5
    n = torch.tensor([[0.0, 1.0], [1.0, 3.0]])  # D = 1, 3
    # max(0, 1 + 5 - 1) = 5; max(0, 1 + 0.5 - 3) = 0
    assert triplet_ranking_loss(q, p, n, gap=1.0, reduction="none").tolist() == pytest.approx(
        [5.0, 0.0]
    )
    assert triplet_ranking_loss(q, p, n).item() == pytest.approx(
        2.5
    )  # the mean counts the zero triplet
    assert triplet_ranking_loss(q, p, n, gap=2.0, reduction="sum").item() == pytest.approx(6.0)
    assert triplet_ranking_loss(q, p, n, gap=3.0, reduction="none")[1].item() == pytest.approx(0.5)
    # Squared D: max(0, 1 + 25 - 1) = 25; max(0, 1 + 0.25 - 9) = 0.
    assert triplet_ranking_loss(q, p, n, squared=True, reduction="none").tolist() == pytest.approx(
        [25.0, 0.0]
    )
    # The same loss in pml's calling convention: [anchors; positives; negatives] and their rows.
    assert triplet_loss(1.0)(
        torch.cat([q, p, n]), indices_tuple=packed_triplets(2)
    ).item() == pytest.approx(2.5)


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
    reference = TripletMarginLoss(
        margin=0.7, distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer()
    )
    interleaved = torch.stack([q, p, n], dim=1).reshape(-1, q.shape[1])
    expected = reference(
        interleaved,
        indices_tuple=EmbeddingsAlreadyPackagedAsTriplets()(interleaved, torch.zeros(120)),
    )
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
    expected = torch.tensor(
        [3.0 - math.dist(a, c) for a, c in zip(q.tolist(), n.tolist())], dtype=torch.float64
    )
    assert (ours - expected).abs().max().item() < 1e-6


def test_the_loss_and_the_miners_share_one_distance():
    plain, squared = triplet_distance(), triplet_distance(squared=True)
    assert isinstance(plain, ExactLpDistance) and not plain.normalize_embeddings
    assert plain.power == 1 and squared.power == 2
    loss = triplet_loss(0.5, squared=True)
    assert (
        isinstance(loss.distance, ExactLpDistance)
        and loss.distance.power == 2
        and loss.margin == 0.5
    )
    assert isinstance(loss.reducer, MeanReducer)


def test_gradient_is_finite_for_identical_points():
    q = torch.zeros(1, 3, requires_grad=True)
    triplet_ranking_loss(q, q.detach().clone(), torch.ones(1, 3)).backward()
    assert torch.isfinite(q.grad).all()
    x = torch.randn(30, 4, requires_grad=True)
    triplet_ranking_loss(
        x, x, x.detach().flip(0), squared=True
    ).backward()  # D(x, x) = 0 in every row
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
        triplet_ranking_loss(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), reduction="max"
        )


def _all_triplet_hinges(z, labels, gap):
    """The hinge of every (a, p, n) of a labelled batch (p != a of a's class, n of another), by a loop."""
    x, y, rows = z.tolist(), labels.tolist(), range(len(labels))
    return [
        max(0.0, gap + math.dist(x[a], x[p]) - math.dist(x[a], x[n]))
        for a in rows
        for p in rows
        for n in rows
        if p != a and y[p] == y[a] and y[n] != y[a]
    ]


def test_the_reducer_is_chosen_by_name_and_changes_the_value():
    # Four points on a line, classes {0, 1} and {2, 3}: 8 triplets, hand-computed with gap 1.
    z = torch.tensor([[0.0], [0.5], [1.0], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    hinges = _all_triplet_hinges(z, labels, 1.0)
    # a=0,p=1: n=2 -> 0.5, n=3 -> 0; a=1,p=0: 1, 0; a=2,p=3: n=0 -> 2, n=1 -> 2.5; a=3,p=2: n=0 -> 0, n=1 -> 0.5
    assert sorted(hinges) == pytest.approx([0, 0, 0, 0.5, 0.5, 1.0, 2.0, 2.5])
    mean, active = (
        triplet_loss(1.0)(z, labels).item(),
        triplet_loss(1.0, reducer="active")(z, labels).item(),
    )
    assert mean == pytest.approx(6.5 / 8) == pytest.approx(sum(hinges) / len(hinges))
    assert (
        active == pytest.approx(6.5 / 5) == pytest.approx(sum(hinges) / sum(h > 0 for h in hinges))
    )
    assert isinstance(make_reducer("active"), AvgNonZeroReducer) and isinstance(
        make_reducer("mean"), MeanReducer
    )
    given = MeanReducer()
    assert make_reducer(given) is given
    with pytest.raises(ValueError, match="unknown reducer 'avg'"):
        triplet_loss(1.0, reducer="avg")


@pytest.mark.parametrize("reducer", ["mean", "active"])
def test_every_triplet_of_a_labelled_batch_against_a_naive_loop(reducer):
    # Codes of length 2 to 5: the loss must take them as given (pml's default would L2-normalise them first).
    g = torch.Generator().manual_seed(5)
    z = F.normalize(torch.randn(30, 6, generator=g), dim=1) * (
        2 + 3 * torch.rand(30, 1, generator=g)
    )
    labels = torch.randint(0, 4, (30,), generator=g)
    hinges = _all_triplet_hinges(z, labels, 2.0)
    assert 0 < sum(h == 0 for h in hinges) < len(hinges)
    expected = sum(hinges) / (len(hinges) if reducer == "mean" else sum(h > 0 for h in hinges))
    assert triplet_loss(2.0, reducer=reducer)(z, labels).item() == pytest.approx(expected, rel=1e-5)
    on_the_sphere = triplet_loss(2.0, reducer=reducer)(F.normalize(z, dim=1), labels).item()
    assert on_the_sphere != pytest.approx(expected, rel=1e-2)  # so the check above can tell


def _contrastive_naive(z, labels, pos_margin, neg_margin, reducer):
    x, y, n = z.tolist(), labels.tolist(), len(labels)
    pos = [
        max(0.0, math.dist(x[i], x[j]) - pos_margin)
        for i in range(n)
        for j in range(n)
        if i != j and y[i] == y[j]
    ]
    neg = [
        max(0.0, neg_margin - math.dist(x[i], x[j]))
        for i in range(n)
        for j in range(n)
        if y[i] != y[j]
    ]

    def reduce(v):
        kept = v if reducer == "mean" else [t for t in v if t > 0]
        return sum(kept) / len(kept) if kept else 0.0

    return reduce(pos) + reduce(neg)  # pml reduces the two kinds of pairs apart and adds them


@pytest.mark.parametrize("reducer", ["mean", "active"])
def test_contrastive_loss_against_a_naive_loop(reducer):
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(20, 5, generator=g), dim=1)
    labels = torch.randint(0, 3, (20,), generator=g)
    expected = _contrastive_naive(z, labels, 0.3, 1.2, reducer)
    assert contrastive_loss(0.3, 1.2, reducer=reducer)(z, labels).item() == pytest.approx(
        expected, rel=1e-5
    )
    assert _contrastive_naive(z, labels, 0.3, 1.2, "mean") != pytest.approx(
        _contrastive_naive(z, labels, 0.3, 1.2, "active")
    )


def test_contrastive_loss_measures_duplicates_at_distance_zero():
    # 40 rows (cdist's matrix-product path) holding 20 pairs of identical codes, one class per pair, margins
    # (0, 0.1): each positive pair costs exactly 0, and "active" counts no positive pair. pml's default
    # distance finds about 1e-3 between the copies, every positive pair active: a loss of about 1e-3.
    g = torch.Generator().manual_seed(0)
    codes = F.normalize(torch.randn(20, 64, generator=g), dim=1)
    z, labels = torch.cat([codes, codes.clone()]), torch.arange(20).repeat(2)
    loss = contrastive_loss(0.0, 0.1, reducer="active")
    assert isinstance(loss.distance, ExactLpDistance) and not loss.distance.normalize_embeddings
    assert (
        loss(z, labels).item() == 0.0
    )  # negatives of random 64-d unit codes are ~1.4 apart: no term is active


@pytest.mark.parametrize("margins", [(0.5, 0.5), (-0.1, 1.0), (0.0, float("nan"))])
def test_contrastive_margins_must_be_ordered(margins):
    with pytest.raises(ValueError, match="pos_margin < neg_margin"):
        contrastive_loss(*margins)
