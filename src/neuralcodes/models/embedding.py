"""The deep-ranking network (Wang et al., CVPR 2014), simplified.

The paper's "three networks" for query, positive and negative share their weights, so here they are
one :class:`RankingEmbedding` applied to every image of a batch once: there is exactly one set of
parameters, and the gradient of the triplet loss is the sum of the three branch contributions.

The multi-scale embedding: the deep backbone on the image plus two shallow branches, each on a
4x and an 8x down-sampled copy (a conv and a max-pool), each output L2-normalised, concatenated,
mapped by a linear layer to the embedding and L2-normalised again.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShallowBranch(nn.Module):
    """On an image already down-sampled by ``factor``: conv 3x3 + ReLU, max-pool to a 4x4 grid."""

    def __init__(self, factor: int, channels: int = 32, grid: int = 4) -> None:
        super().__init__()
        self.factor = factor
        self.grid = grid
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.out_features = channels * grid * grid

    def forward(self, small: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(small - 0.5))
        h, w = y.shape[-2:]
        if (
            h % self.grid == 0 and w % self.grid == 0
        ):  # plain max-pool: much faster than adaptive on CPU
            return F.max_pool2d(y, (h // self.grid, w // self.grid)).flatten(1)
        return F.adaptive_max_pool2d(y, self.grid).flatten(1)


LOW_FACTOR = 4  # the shallow branches read the image down-sampled 4x (and 8x = that, pooled 2x)


def downsample(x: torch.Tensor, factor: int = LOW_FACTOR) -> torch.Tensor:
    """The 4x average-pooled image that both shallow branches start from (cacheable: it is fixed)."""
    return F.avg_pool2d(x, factor)


class RankingEmbedding(nn.Module):
    """images -> unit-norm embedding; ``deep`` may hand in precomputed (frozen) backbone features."""

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int = 128,
        multiscale: bool = True,
        shallow_channels: int = 32,
        freeze_backbone: bool = False,
        head_hidden: int = 0,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
        self.shallow = nn.ModuleList(
            [
                ShallowBranch(LOW_FACTOR, shallow_channels),
                ShallowBranch(2 * LOW_FACTOR, shallow_channels),
            ]
            if multiscale
            else []
        )
        width = backbone.out_features + sum(b.out_features for b in self.shallow)
        # The paper's head is linear (head_hidden=0); a hidden ReLU layer is an option for frozen
        # features, where a linear map of fixed features limits what training can change.
        self.head = (
            nn.Linear(width, embedding_dim)
            if head_hidden <= 0
            else nn.Sequential(
                nn.Linear(width, head_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(head_hidden, embedding_dim),
            )
        )

    def train(self, mode: bool = True) -> "RankingEmbedding":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # a frozen backbone keeps its BN statistics
        return self

    def deep_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.freeze_backbone:
            with torch.no_grad():
                return self.backbone(x).float()
        return self.backbone(x)

    def forward_features(
        self,
        x: torch.Tensor | None,
        layers: Sequence[str] = ("embedding",),
        deep: torch.Tensor | None = None,
        low: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named outputs: 'backbone' (raw deep features), 'concat' (normalised branches), 'embedding'.

        ``deep``: precomputed backbone features (then ``x`` is not run through the backbone);
        ``low``: precomputed ``downsample(x)`` for the shallow branches (then ``x`` may be None).
        """
        unknown = set(layers) - {"backbone", "concat", "embedding"}
        if unknown:
            raise ValueError(
                f"unknown layers {sorted(unknown)}: use 'backbone', 'concat', 'embedding'"
            )
        if deep is None:
            if x is None:
                raise ValueError("give images or precomputed deep features")
            deep = self.deep_features(x)
        out = {"backbone": deep}
        parts = [F.normalize(deep.float(), dim=1)]
        if len(self.shallow):
            if low is None:
                if x is None:
                    raise ValueError(
                        "the multi-scale branches need the images, not only the deep features"
                    )
                low = downsample(x)
            # avg-pools compose exactly: the 8x copy is the 4x copy pooled by 2.
            parts += [
                F.normalize(
                    b(
                        F.avg_pool2d(low, b.factor // LOW_FACTOR) if b.factor > LOW_FACTOR else low
                    ).float(),
                    dim=1,
                )
                for b in self.shallow
            ]
        out["concat"] = torch.cat(parts, dim=1)
        out["embedding"] = F.normalize(self.head(out["concat"]).float(), dim=1)
        return {k: out[k] for k in layers}

    def forward(
        self,
        x: torch.Tensor | None,
        deep: torch.Tensor | None = None,
        low: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.forward_features(x, ("embedding",), deep=deep, low=low)["embedding"]
