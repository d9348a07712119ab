import math

import pytest
import torch

from neuralcodes.learning.miners import MINERS, get_miner, mine_negatives


def _batch(seed=0, b=24, d=5, classes=4):
    g = torch.Generator().manual_seed(seed)
    q, p, n = (torch.randn(b, d, generator=g) for _ in range(3))
    lq = torch.randint(0, classes, (b,), generator=g)
    ln = (lq + torch.randint(1, classes, (b,), generator=g)) % classes
    return q, p, n, lq, ln


def _naive(kind, q, p, n, lq, ln):
    pool = list(q) + list(p) + list(n)
    labels = lq.tolist() + lq.tolist() + ln.tolist()
    out = []
    for i in range(len(q)):
        d_pos = math.dist(q[i].tolist(), p[i].tolist())
        best, best_d = None, math.inf
        for j, (c, lc) in enumerate(zip(pool, labels)):
            d = math.dist(q[i].tolist(), c.tolist())
            if lc == lq[i] or (kind == "semihard" and not d > d_pos):
                continue
            if d < best_d:
                best, best_d = j, d
        out.append(n[i] if best is None else pool[best])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["hard", "semihard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_naive_loop(kind, seed):
    q, p, n, lq, ln = _batch(seed)
    mined = mine_negatives(get_miner(kind), q, p, n, lq, ln)
    assert torch.allclose(mined, _naive(kind, q, p, n, lq, ln))


def test_random_keeps_the_sampled_negative_and_hard_is_harder():
    q, p, n, lq, ln = _batch(3)
    assert torch.equal(mine_negatives(get_miner("random"), q, p, n, lq, ln), n)
    hard = mine_negatives(get_miner("hard"), q, p, n, lq, ln)
    assert ((q - hard).norm(dim=1) <= (q - n).norm(dim=1) + 1e-6).all()


def test_semihard_falls_back_when_no_candidate():
    q = torch.zeros(2, 2)
    p = torch.tensor([[10.0, 0], [10.0, 0]])  # positives farther than any negative
    n = torch.tensor([[1.0, 0], [0, 1.0]])
    lq, ln = torch.tensor([0, 0]), torch.tensor([1, 1])
    assert torch.equal(mine_negatives(get_miner("semihard"), q, p, n, lq, ln), n)


def test_gradient_flows_into_the_chosen_candidate():
    q, p, n, lq, ln = _batch(4)
    p.requires_grad_(True)
    n.requires_grad_(True)
    mine_negatives(get_miner("hard"), q, p, n, lq, ln).sum().backward()
    assert p.grad.abs().sum() + n.grad.abs().sum() > 0


def test_unknown_miner():
    assert set(MINERS) == {"random", "hard", "semihard"}
    with pytest.raises(ValueError, match="unknown mining"):
        get_miner("hardest")
