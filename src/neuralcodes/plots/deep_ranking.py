"""Deep-ranking figures: loss curves, and queries with their top and bottom results."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

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
    """One block of rows per query: the query, its ``show`` nearest and ``show`` farthest results.

    ``top[i]`` / ``bottom[i]`` hold ``indices`` and ``distances`` into ``database_images``.
    A green frame marks a result of the query's class, a red one any other class.
    """
    n = len(query_images)
    fig, axes = plt.subplots(2 * n, show + 1, figsize=(1.45 * (show + 1), 1.75 * 2 * n), squeeze=False)
    for q in range(n):
        for row, (results, kind) in enumerate(((top[q], "top"), (bottom[q], "bottom"))):
            r = 2 * q + row
            ax = axes[r, 0]
            if row == 0:
                ax.imshow(query_images[q])
                ax.set_title(f"query\n{_short(class_names[query_labels[q]])}", fontsize=7)
            else:
                ax.text(0.5, 0.5, f"bottom {show}", ha="center", va="center", fontsize=8)
            ax.axis("off")
            for j in range(show):
                ax = axes[r, j + 1]
                idx, dist = int(results["indices"][j]), float(results["distances"][j])
                ax.imshow(database_images[idx])
                same = results["labels"][j] == query_labels[q]
                for spine in ax.spines.values():
                    spine.set_edgecolor("green" if same else "red")
                    spine.set_linewidth(3)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{dist:.3f}\n{_short(class_names[results['labels'][j]])}", fontsize=6)
    return save_figure(fig, path)


def _short(name: str, width: int = 16) -> str:
    name = name.split(",")[0]
    return name if len(name) <= width else name[: width - 1] + "…"
