"""Deep-ranking figures: loss curves, and queries with their top and bottom results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.plots.save import save_figure


def plot_loss_curves(history: Sequence[dict], iterations: Sequence[dict], path: str | Path) -> Path:
    """Loss per iteration (with a moving average) and per epoch, plus similarity precision per epoch."""
    fig, (ax_loss, ax_prec) = plt.subplots(1, 2, figsize=(11, 4))
    if iterations:
        it = np.arange(1, len(iterations) + 1)  # by position: robust to how a log numbered them
        loss = np.array([r["loss"] for r in iterations])
        ax_loss.plot(it, loss, lw=0.5, alpha=0.4, label="iteration")
        w = max(1, len(loss) // 50)
        if w > 1:
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax_loss.plot(it[w - 1 :], smooth, lw=1.5, label=f"moving average ({w})")
        per_epoch = len(loss) / max(1, len(history))
        ax_loss.plot(
            [h["epoch"] * per_epoch for h in history],
            [h["loss"] for h in history],
            "o-",
            label="epoch mean",
        )
    ax_loss.set(xlabel="iteration", ylabel="triplet hinge loss", title="training loss")
    ax_loss.legend()
    epochs = [h["epoch"] for h in history]
    for key, label in (
        ("train_similarity_precision", "train triplets"),
        ("test_similarity_precision", "test triplets"),
    ):
        ax_prec.plot(epochs, [h[key] for h in history], "o-", label=label)
    ax_prec.set(xlabel="epoch", ylabel="similarity precision", title="D(q,p) < D(q,n)")
    ax_prec.legend()
    return save_figure(fig, path)
