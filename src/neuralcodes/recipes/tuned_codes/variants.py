"""The codes of every compared variant: held-out codes (what is scored) and in-domain training codes
(what whitening and PCA are fitted on, never the held-out ones), with the time the held-out codes took.

Variants that come out of one forward pass (L5, L6 and L7; MAC, SPoC and the GeMs of one map)
share that pass's time: pooling costs nothing next to the convolutions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralcodes.layers.pooling import GeM, build_pooling
from neuralcodes.layers.whitening import (
    learned_whitening,
    pca_whitening,
    whiten,
    whitening_shrinkage,
)
from neuralcodes.learning.losses import triplet_loss
from neuralcodes.learning.miners import get_miner
from neuralcodes.learning.samplers import m_per_class_order
from neuralcodes.recipes.tuned_codes.base import Base
from neuralcodes.retrieval.codes import extract_codes
from neuralcodes.retrieval.pca import PCA


@dataclass
class ImageSets:
    """Image indices a variant is computed on: held-out queries, in-domain fitting and distractor images."""

    ood: np.ndarray
    fit: np.ndarray
    distractors: np.ndarray


@dataclass
class Variant:
    name: str
    family: str  # classification | pooled | fine-tuned | off-the-shelf | compressed
    ood: np.ndarray  # L2-normalised codes of the held-out images
    fit: np.ndarray  # codes of in-domain training images (fitting whitening / PCA)
    distractors: np.ndarray  # codes of in-domain test images (the grey points of the t-SNE figures)
    seconds: float  # computing the held-out codes
    saw_held_out: bool
    note: str = ""
    reference: bool = (
        False  # the base's classification codes: what the other variants are measured against
    )
    of_reference: bool = (
        False  # derived from the reference codes (compressed): not a contender against them
    )

    @property
    def dim(self) -> int:
        return int(self.ood.shape[1])


class PooledHeads(nn.Module):
    """One pass through a feature map, pooled several ways: ``forward_features`` for code extraction."""

    def __init__(self, feature_map: nn.Module, poolings: dict[str, nn.Module]) -> None:
        super().__init__()
        self.feature_map = feature_map
        self.poolings = nn.ModuleDict(poolings)

    def forward_features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        fmap = self.feature_map(x)
        return {name: self.poolings[name](fmap) for name in layers}


def _timed_codes(
    model: nn.Module,
    base: Base,
    indices: np.ndarray,
    layers: Sequence[str],
    bf16: bool,
    batch_size: int,
) -> tuple[dict[str, np.ndarray], float]:
    if base.device.type == "cuda":
        torch.cuda.synchronize(base.device)
    t0 = time.perf_counter()
    codes = extract_codes(
        model, base.images, indices, list(layers), batch_size=batch_size, autocast=bf16
    )
    return codes, time.perf_counter() - t0


def network_variants(
    model: nn.Module,
    layers: dict[str, str],
    family: str,
    base: Base,
    sets: ImageSets,
    saw_held_out: bool,
    bf16: bool = True,
    batch_size: int = 256,
    note: str = "",
    reference: bool = False,
) -> list[Variant]:
    """Codes of ``model.forward_features`` layers (``layers``: layer -> variant name)."""
    ood, seconds = _timed_codes(model, base, sets.ood, list(layers), bf16, batch_size)
    fit, _ = _timed_codes(model, base, sets.fit, list(layers), bf16, batch_size)
    extra, _ = _timed_codes(model, base, sets.distractors, list(layers), bf16, batch_size)
    return [
        Variant(
            name,
            family,
            ood[layer],
            fit[layer],
            extra[layer],
            seconds,
            saw_held_out,
            note,
            reference,
        )
        for layer, name in layers.items()
    ]


def pooled_variants(
    base: Base,
    sets: ImageSets,
    learned_p: float | None,
    prefix: str,
    family: str = "pooled",
    bf16: bool = True,
    batch_size: int = 256,
) -> list[Variant]:
    """MAC, SPoC, GeM (p = 3) and GeM with ``learned_p`` of the base's map."""
    poolings = {
        "mac": build_pooling("mac"),
        "spoc": build_pooling("spoc"),
        "gem3": GeM(3.0, learn_p=False),
    }
    names = {"mac": f"{prefix} MAC", "spoc": f"{prefix} SPoC", "gem3": f"{prefix} GeM p=3"}
    if learned_p is not None:
        poolings["gem_learned"] = GeM(learned_p, learn_p=False)
        names["gem_learned"] = f"{prefix} GeM learned p={learned_p:.2f}"
    heads = PooledHeads(base.feature_map, poolings).to(base.device)
    return network_variants(heads, names, family, base, sets, base.saw_held_out, bf16, batch_size)


def whitened_variants(variant: Variant, fit_labels: np.ndarray) -> list[Variant]:
    """The variant with PCA-whitening and with learned whitening, both fitted on its training codes."""
    n, d = variant.fit.shape
    out = []
    pca_shrink, learned_shrink = whitening_shrinkage(n, d)
    for kind, fit in (
        ("PCA-whitened", lambda: pca_whitening(variant.fit, shrinkage=pca_shrink)),
        (
            "learned whitening",
            lambda: learned_whitening(variant.fit, fit_labels, shrinkage=learned_shrink),
        ),
    ):
        layer = fit()
        t0 = time.perf_counter()
        ood = whiten(layer, variant.ood)
        seconds = variant.seconds + time.perf_counter() - t0
        out.append(
            replace(
                variant,
                name=f"{variant.name} + {kind}",
                reference=False,
                ood=ood,
                fit=whiten(layer, variant.fit),
                distractors=whiten(layer, variant.distractors),
                seconds=seconds,
            )
        )
    return out


def compressed_variants(variant: Variant, dim: int) -> list[Variant]:
    """PCA to ``dim`` dimensions, plain and with whitening (Babenko et al.), fitted on the variant's training
    codes and L2-normalised; none when the variant has no more than ``dim`` dimensions or its training codes
    span fewer. Both, because whitening fitted on in-domain codes can cost held-out classes more than it gives."""
    if variant.dim <= dim:
        return []
    pca = PCA(dim).fit(variant.fit)
    if pca.n_components_ < dim:
        return []
    out = []
    for whitened, label in ((False, "PCA"), (True, "PCA-w")):
        t0 = time.perf_counter()
        ood = pca.transform(variant.ood, dim, whiten=whitened)
        seconds = variant.seconds + time.perf_counter() - t0
        out.append(
            replace(
                variant,
                name=f"{variant.name} -> {label} {dim}",
                family="compressed",
                reference=False,
                of_reference=variant.reference or variant.of_reference,
                ood=ood,
                fit=pca.transform(variant.fit, dim, whiten=whitened),
                distractors=pca.transform(variant.distractors, dim, whiten=whitened),
                seconds=seconds,
            )
        )
    return out


@torch.no_grad()
def feature_maps(
    base: Base, indices: np.ndarray, bf16: bool = True, batch_size: int = 128
) -> torch.Tensor:
    """The base's feature maps of ``indices`` in float16 on the CPU (to learn p on without the network)."""
    base.feature_map.eval()
    out = []
    for lo in range(0, len(indices), batch_size):
        x = base.images.batch(indices[lo : lo + batch_size])
        with torch.autocast(base.device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(base.feature_map(x).float().half().cpu())
    return torch.cat(out)


def learn_gem_power(
    maps: torch.Tensor,
    labels: np.ndarray,
    steps: int = 200,
    seed: int = 0,
    m: int = 4,
    batch_size: int = 80,
    lr: float = 0.05,
    margin: float = 0.1,
) -> float:
    """GeM's p learned alone (the network frozen) with the semi-hard triplet loss on in-domain maps."""
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    batch_size = min(batch_size, n_classes * m) // m * m
    pool = GeM(3.0, learn_p=True)
    optimizer = torch.optim.Adam(pool.parameters(), lr=lr)
    # Every semi-hard triplet violates the margin, so "active" (the fine-tuning's reducer) is their plain mean.
    loss_fn, miner = triplet_loss(margin, reducer="active"), get_miner("semihard", margin)
    everything = np.arange(len(labels))
    for step in range(steps):
        idx = m_per_class_order(labels, everything, m, batch_size, 1, seed, step)
        z = F.normalize(pool(maps[torch.as_tensor(idx)].float()), dim=1)
        y = torch.as_tensor(labels[idx])
        loss = loss_fn(z, y, miner(z, y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            pool.p.clamp_(min=1.0)  # below 1 GeM is no longer between average and max pooling
    return float(pool.p.detach())
