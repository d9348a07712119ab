"""The retrieval network of the cirtorch recipe: feature map -> pooling -> L2 -> (whitening -> L2).

Whitening learned once on in-domain training codes becomes a linear layer after the pooling, so
the whitened network fine-tunes end to end. Batch-norm statistics can stay frozen (``freeze_bn``):
batches of m images of a few classes would estimate them badly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuralcodes.layers.pooling import GeM


class RetrievalNet(nn.Module):
    """Images in [0, 1] -> unit-length codes; ``forward_features(x, ("code",))`` for code extraction."""

    def __init__(
        self,
        feature_map: nn.Module,
        pooling: nn.Module,
        whitening: nn.Linear | None = None,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__()
        self.feature_map = feature_map
        self.pooling = pooling
        self.whitening = whitening
        self.freeze_bn = freeze_bn

    @property
    def dim(self) -> int:
        return (
            self.whitening.out_features
            if self.whitening is not None
            else int(self.feature_map.out_channels)
        )

    @property
    def p(self) -> float | None:
        """GeM's power (None for another pooling)."""
        return float(self.pooling.p.detach()) if isinstance(self.pooling, GeM) else None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled codes, before any whitening (what a whitening is fitted on)."""
        return F.normalize(self.pooling(self.feature_map(x)).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.pooled(x)
        if self.whitening is not None:
            code = F.normalize(self.whitening(code).float(), dim=1)
        return code

    def forward_features(
        self, x: torch.Tensor, layers: Sequence[str] = ("code",)
    ) -> dict[str, torch.Tensor]:
        unknown = set(layers) - {"code", "pooled"}
        if unknown:
            raise ValueError(
                f"unknown layer(s) {sorted(unknown)}; a retrieval network has 'code' and 'pooled'"
            )
        pooled = self.pooled(x)
        out = {"pooled": pooled}
        if "code" in layers:
            out["code"] = (
                pooled
                if self.whitening is None
                else F.normalize(self.whitening(pooled).float(), dim=1)
            )
        return {k: out[k] for k in layers}

    def train(self, mode: bool = True) -> RetrievalNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """cirtorch's groups: the network at ``lr``; pooling and whitening at 10x ``lr``, without decay."""
        head = [
            p
            for m in (self.pooling, self.whitening)
            if m is not None
            for p in m.parameters()
            if p.requires_grad
        ]
        head_ids = {id(p) for p in head}
        body = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": body, "lr": lr, "weight_decay": weight_decay}]
        if head:
            groups.append({"params": head, "lr": 10 * lr, "weight_decay": 0.0})
        return groups
