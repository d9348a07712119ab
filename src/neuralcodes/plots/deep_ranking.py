"""Deep-ranking figures: loss curves, and queries with their top and bottom results."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.plots.retrieval import (
    plot_ranked_results as plot_ranked_results_figure,
)
from neuralcodes.plots.style import save_figure


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
        ax_loss.plot([h["epoch"] * per_epoch for h in history], [h["loss"] for h in history], "o-", label="epoch mean")
    ax_loss.set(xlabel="iteration", ylabel="triplet hinge loss", title="training loss")
    ax_loss.legend()
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_similarity_precision", "train triplets"), ("test_similarity_precision", "test triplets")):
        ax_prec.plot(epochs, [h[key] for h in history], "o-", label=label)
    ax_prec.set(xlabel="epoch", ylabel="similarity precision", title="D(q,p) < D(q,n)")
    ax_prec.legend()
    return save_figure(fig, path)


def plot_ranked_results(
    query_images: np.ndarray,
    query_labels: Sequence[int],
    top: Sequence[dict],
    bottom: Sequence[dict],
    database_images: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    show: int = 10,
) -> Path:
    """The deep-ranking call of :func:`neuralcodes.plots.retrieval.plot_ranked_results` (the one
    implementation): ``top[i]`` / ``bottom[i]`` hold ``indices``, ``distances`` and ``labels`` of
    query i's nearest and farthest results in ``database_images``; ``show`` of each are drawn.
    """

    def block(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.stack([np.asarray(r["indices"][:show]) for r in rows])
        labels = np.stack([np.asarray(r["labels"][:show]) for r in rows])
        distances = np.stack([np.asarray(r["distances"][:show]) for r in rows])
        return database_images[indices.ravel()].reshape(*indices.shape, *database_images.shape[1:]), labels, distances

    images, labels, distances = block(top)
    return plot_ranked_results_figure(query_images, query_labels, images, labels, class_names, path,
                                      distances=distances, bottom=block(bottom))  # fmt: skip
