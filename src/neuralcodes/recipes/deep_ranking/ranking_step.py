"""The deep-ranking network and what it learns from: the triplet objective, one optimiser step on a batch
of triplets, the embeddings and the similarity precision the run reports (on fixed evaluation triplets).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BaseMiner

from neuralcodes.device import autocast
from neuralcodes.learning.loop import InEpoch, run_epoch
from neuralcodes.learning.losses import triplet_distance, triplet_loss
from neuralcodes.learning.miners import get_miner
from neuralcodes.learning.samplers import TripletSampler, derive_seed
from neuralcodes.models.backbones import build_backbone
from neuralcodes.models.embedding import RankingEmbedding
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.deep_ranking.inputs import RankingInputs
from neuralcodes.recipes.neural_codes import train as _neural_codes  # noqa: F401  registers the "convnet" backbone

# Seed keys of the fixed evaluation triplets (epochs use keys 0, 1, 2, ... of the run seed).
TRAIN_EVAL_KEY, TEST_EVAL_KEY = 1_000_001, 1_000_002


def build_network(config: RankConfig) -> RankingEmbedding:
    backbone = build_backbone(config.backbone, config.pretrained, config.weights, config.image_size)
    return RankingEmbedding(
        backbone,
        config.embedding_dim,
        multiscale=config.multiscale,
        freeze_backbone=config.freeze_backbone,
        head_hidden=config.head_hidden,
    )


def build_objective(config: RankConfig) -> tuple[TripletMarginLoss, BaseMiner | None]:
    """The triplet loss (gap g, plain or squared D) and the in-batch miner of ``config`` (None: random)."""
    return (
        triplet_loss(config.gap, config.squared_distance),
        get_miner(config.mining, config.gap, config.squared_distance),
    )


def head_autocast(device: torch.device, bf16: bool, inputs: RankingInputs) -> bool:
    """bf16 for the head only where it pays: on CPU, a head over cached features is so small that
    autocast's casts cost more than they save (measured: ~2x slower), so it runs in fp32 there."""
    return bf16 and (device.type == "cuda" or inputs.images is not None)


@torch.no_grad()
def embed(
    net: RankingEmbedding,
    inputs: RankingInputs,
    indices: np.ndarray,
    device: torch.device,
    bf16: bool,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Unit embeddings (float32, on CPU) of ``indices``."""
    net.eval()
    out = []
    for lo in range(0, len(indices), batch_size):
        x, deep, low = inputs.get(indices[lo : lo + batch_size])
        with autocast(device, head_autocast(device, bf16, inputs)):
            out.append(net(x, deep=deep, low=low).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, net.embedding_dim)


def triplet_precision(
    net: RankingEmbedding,
    inputs: RankingInputs,
    triplets: np.ndarray,
    device: torch.device,
    bf16: bool,
) -> float:
    """Similarity precision: share of triplets with D(q, p) < D(q, n)."""
    from neuralcodes.retrieval.metrics import similarity_precision

    used, inverse = np.unique(triplets, return_inverse=True)
    z = embed(net, inputs, used, device, bf16)[torch.from_numpy(inverse.reshape(triplets.shape))]
    d = triplet_distance().pairwise_distance  # the order of D and of D squared is the same
    return similarity_precision(d(z[:, 0], z[:, 1]).numpy(), d(z[:, 0], z[:, 2]).numpy())


def eval_triplets(labels: np.ndarray, n: int, seed: int, key: int) -> np.ndarray:
    return TripletSampler(labels).sample(n, derive_seed(seed, key))


def ranking_step(
    net: RankingEmbedding,
    optimizer: torch.optim.Optimizer,
    loss_fn: TripletMarginLoss,
    miner: BaseMiner | None,
    inputs: RankingInputs,
    device: torch.device,
    bf16: bool,
    record: Callable[[float], None] = lambda loss: None,
) -> Callable[[np.ndarray], dict[str, float]]:
    """One optimiser step on a batch of triplets (rows of image indices); ``record`` gets its loss.

    A batch embeds each of its distinct images once (the weight-sharing query, positive and negative
    networks are one module); the loss trains on the sampled triplets, or on those ``miner`` picks among
    all the batch's images (no image twice, so no image is mined as its own positive).
    """

    def step(t: np.ndarray) -> dict[str, float]:
        images, rows = np.unique(t.reshape(-1), return_inverse=True)
        x, deep, low = inputs.get(images)
        with autocast(device, head_autocast(device, bf16, inputs)):
            z = net(x, deep=deep, low=low)  # float32: the embedding ends in a float32 normalisation
        labels = torch.from_numpy(inputs.labels[images]).to(device)
        if miner is None:
            sampled = torch.from_numpy(rows.reshape(t.shape)).to(device)
            chosen = (sampled[:, 0], sampled[:, 1], sampled[:, 2])
        else:
            chosen = miner(z, labels)
        loss = loss_fn(z, labels, chosen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record(float(loss.detach()))
        return {"loss": float(loss.detach())}

    return step


def train_epoch(
    net: RankingEmbedding,
    optimizer: torch.optim.Optimizer,
    loss_fn: TripletMarginLoss,
    miner: BaseMiner | None,
    inputs: RankingInputs,
    triplets: np.ndarray,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    epoch: int,
) -> list[float]:
    """One pass over ``triplets`` outside a run (the mining comparison); returns the loss of every iteration."""
    losses: list[float] = []
    step = ranking_step(net, optimizer, loss_fn, miner, inputs, device, bf16, record=losses.append)
    net.train()
    run_epoch(InEpoch(epoch, triplets), step, batch_size, f"epoch {epoch + 1}", unit="triplets")
    return losses
