import pytest
import torch

from neuralcodes.learning.losses import triplet_ranking_loss
from neuralcodes.models.backbones import TinyBackbone
from neuralcodes.models.embedding import RankingEmbedding, downsample


def _net(multiscale=True, freeze=False, dim=8):
    torch.manual_seed(0)
    return RankingEmbedding(
        TinyBackbone(width=4), dim, multiscale=multiscale, freeze_backbone=freeze
    )


def _triplet(net, q, p, n):
    """The paper's three weight-sharing networks: one module over the stacked batch."""
    return net(torch.cat([q, p, n])).chunk(3)


def _images(n, seed):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("multiscale", [True, False])
def test_shapes_and_unit_norm(multiscale):
    net = _net(multiscale)
    out = net.forward_features(_images(5, 0), ("backbone", "concat", "embedding"))
    assert out["backbone"].shape == (5, 8)
    width = 8 + (2 * 32 * 16 if multiscale else 0)
    assert out["concat"].shape == (5, width)
    assert out["embedding"].shape == (5, 8)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(5), atol=1e-5)
    # Each branch is normalised on its own before concatenation.
    n_branches = 3 if multiscale else 1
    assert torch.allclose(
        out["concat"].norm(dim=1) ** 2, torch.full((5,), float(n_branches)), atol=1e-4
    )


def test_hidden_layer_head():
    torch.manual_seed(0)
    emb = RankingEmbedding(TinyBackbone(width=4), 6, multiscale=False, head_hidden=10)
    z = emb(_images(3, 2))
    assert z.shape == (3, 6) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert emb.head[0].out_features == 10 and emb.head[2].out_features == 6


def test_shallow_branches_see_the_8x_copy_as_4x_pooled_by_2():
    x = _images(2, 1)
    assert torch.allclose(
        torch.nn.functional.avg_pool2d(downsample(x), 2),
        torch.nn.functional.avg_pool2d(x, 8),
        atol=1e-6,
    )
    emb = _net()
    assert torch.allclose(emb(x), emb(None, deep=emb.backbone(x), low=downsample(x)), atol=1e-6)


def test_embedding_a_stacked_batch_embeds_each_image_on_its_own():
    net = _net()
    q, p, n = _images(4, 1), _images(4, 2), _images(4, 3)
    for z, x in zip(_triplet(net, q, p, n), (q, p, n)):
        assert torch.allclose(z, net(x), atol=1e-6)


def _grads(net, q, p, n, detach=()):
    net.zero_grad()
    zq, zp, zn = _triplet(net, q, p, n)
    z = {"q": zq, "p": zp, "n": zn}
    for k in detach:
        z[k] = z[k].detach()
    triplet_ranking_loss(z["q"], z["p"], z["n"], gap=2.0).backward()
    return [prm.grad.clone() for prm in net.parameters()]


def test_gradient_is_the_sum_of_the_three_branch_contributions():
    net = _net()
    q, p, n = _images(6, 4), _images(6, 5), _images(6, 6)
    total = _grads(net, q, p, n)
    only = {k: _grads(net, q, p, n, detach=[o for o in "qpn" if o != k]) for k in "qpn"}
    for g_all, gq, gp, gn in zip(total, only["q"], only["p"], only["n"]):
        # The branches' contributions are up to ~50x larger than their sum and cancel: float32 rounding
        # is relative to them (observed 6e-5 with one thread), a missing branch is off by 100% of one.
        scale = gq.abs() + gp.abs() + gn.abs()
        assert ((g_all - (gq + gp + gn)).abs() <= 5e-4 * scale + 1e-7).all()
    # Every branch contributes: each one alone gives a non-zero gradient.
    for k in "qpn":
        assert sum(g.abs().sum() for g in only[k]) > 0


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval():
    net = _net(freeze=True)
    net.train()
    assert not net.backbone.training
    zq, zp, zn = _triplet(net, _images(3, 7), _images(3, 8), _images(3, 9))
    triplet_ranking_loss(zq, zp, zn).backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert net.head.weight.grad is not None


def test_bad_inputs():
    net = _net()
    with pytest.raises(ValueError, match="unknown layers"):
        net.forward_features(_images(1, 0), ("L9",))
    with pytest.raises(ValueError, match="need the images"):
        net(None, deep=torch.zeros(1, 8))
    with pytest.raises(ValueError, match="embedding_dim"):
        RankingEmbedding(TinyBackbone(), 0)
