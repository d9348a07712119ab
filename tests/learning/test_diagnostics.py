"""The triplet figures of a batch (learning/diagnostics.py) against a loop over every (a, p, n)."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from neuralcodes.learning.diagnostics import FIGURES, triplet_diagnostics
from neuralcodes.learning.distributed import World, gather_rows
from neuralcodes.learning.losses import triplet_distance, triplet_loss


def _naive(z, labels, gap, squared=False):
    x, y, rows = z.tolist(), labels.tolist(), range(len(labels))
    power = 2 if squared else 1
    dist_ = lambda i, j: math.dist(x[i], x[j]) ** power  # noqa: E731
    triplets = [
        (a, p, n)
        for a in rows
        for p in rows
        for n in rows
        if p != a and y[p] == y[a] and y[n] != y[a]
    ]
    hinge = [max(0.0, gap + dist_(a, p) - dist_(a, n)) for a, p, n in triplets]
    d_ap = sum(dist_(a, p) for a, p, _ in triplets) / len(triplets)
    d_an = sum(dist_(a, n) for a, _, n in triplets) / len(triplets)
    pairs = [dist_(i, j) for i in rows for j in rows if i != j]
    return {
        "active": sum(h > 0 for h in hinge) / len(triplets),
        "loss_all": sum(hinge) / len(triplets),
        "d_ap": d_ap,
        "d_an": d_an,
        "gap": d_an - d_ap,
        "spread": sum(pairs) / len(pairs),
    }


def _batch(seed, n=26, d=5, classes=4, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, d, generator=g)
    return F.normalize(centres[labels] + scale * torch.randn(n, d, generator=g), dim=1), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("squared", [False, True])
def test_the_figures_match_a_loop_over_every_triplet(seed, squared):
    z, labels = _batch(seed)
    z = torch.cat([z, z[:3].clone()])  # copies of rows: positives at distance 0
    labels = torch.cat([labels, labels[:3]])
    z = z * (
        1 + torch.arange(len(z)).unsqueeze(1) / len(z)
    )  # and not unit vectors: D as given, never normalised
    got = triplet_diagnostics(z, labels, 0.3, triplet_distance(squared))
    expected = _naive(z, labels, 0.3, squared)
    assert 0.05 < expected["active"] < 0.95  # both sides of the hinge occur
    assert set(got) == set(FIGURES)
    for key in FIGURES:
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key


def test_the_figures_agree_with_the_losses_they_explain():
    # The mean over all triplets is MeanReducer's loss; divided by the active fraction it is AvgNonZero's.
    z, labels = _batch(3, n=60, scale=0.8)
    got = triplet_diagnostics(z, labels, 0.2)
    mean = triplet_loss(0.2)(z, labels).item()
    active_mean = triplet_loss(0.2, reducer="active")(z, labels).item()
    assert got["loss_all"] == pytest.approx(mean, rel=1e-5)
    assert got["loss_all"] / got["active"] == pytest.approx(active_mean, rel=1e-5)


def test_collapsed_codes_cost_every_triplet_the_margin_and_separated_ones_none():
    labels = torch.arange(12) % 3
    collapsed = triplet_diagnostics(torch.ones(12, 4) / 2, labels, 0.1)
    assert collapsed == pytest.approx(
        {"active": 1.0, "loss_all": 0.1, "d_ap": 0.0, "d_an": 0.0, "gap": 0.0, "spread": 0.0}
    )
    # The same loss figure (0.1 = the margin, under the active mean) from codes that are not collapsed at all.
    separated = F.one_hot(labels, 3).float()
    far = triplet_diagnostics(separated, labels, 0.1)
    assert far["active"] == 0.0 and far["loss_all"] == 0.0
    assert far["gap"] == pytest.approx(math.sqrt(2)) and far["spread"] > 0.9


def test_a_batch_without_triplets_has_no_triplet_figures():
    got = triplet_diagnostics(
        torch.randn(4, 3), torch.arange(4), 0.1
    )  # every image alone in its class
    assert math.isnan(got["active"]) and math.isnan(got["gap"]) and got["spread"] > 0


def _gather_on(rank: int, size: int, path: str, rows: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=size)
    try:
        mine = torch.full((rows[rank], 2), float(rank)) + torch.arange(rows[rank]).unsqueeze(1)
        got = gather_rows(World(rank, size), mine.requires_grad_(True))
        if rank == 0:
            torch.save(got, out)
    finally:
        dist.destroy_process_group()


def test_gather_rows_joins_every_processs_rows_in_rank_order(tmp_path):
    x = torch.randn(3, 2, requires_grad=True)
    assert torch.equal(gather_rows(World(), x), x) and not gather_rows(World(), x).requires_grad
    out = tmp_path / "gathered.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_gather_on, args=(2, str(tmp_path / "store"), [3, 2], str(out)), nprocs=2, join=True)
    got = torch.load(out)
    expected = torch.cat(
        [
            torch.arange(3.0).unsqueeze(1).expand(3, 2),
            1 + torch.arange(2.0).unsqueeze(1).expand(2, 2),
        ]
    )
    assert torch.equal(got, expected)  # shards of unequal length: 3 rows, then 2
