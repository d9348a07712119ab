"""Retrieval figures: ranked results (Babenko et al. Fig. 2/3), precision-recall, mAP per layer, PCA."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.plots.save import save_figure

SAME, OTHER = "#2ca02c", "#d62728"


def _show(
    ax: plt.Axes, image: np.ndarray, title: str, color: str | None = None, fontsize: int = 7
) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize, color=color or "black")
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_color(color)
            spine.set_linewidth(3)


def _short(name: str, width: int = 16) -> str:
    """The first synonym of a class name ("goldfish, Carassius auratus" -> "goldfish"), cut to ``width``."""
    name = name.split(",")[0]
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_ranked_results(
    query_images: np.ndarray,
    query_labels: Sequence[int],
    result_images: np.ndarray,
    result_labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    distances: np.ndarray | None = None,
    bottom: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    title: str = "",
) -> Path:
    """Queries and their ranked results (Babenko et al. Fig. 2/3; the deep-ranking top/bottom figure).

    One row per query: the query, then ``result_images[i]`` (Q, k, H, W, 3) in rank order, each
    framed green (``result_labels[i, j]`` is the query's class) or red, titled with its class name
    and, when ``distances`` (Q, k) is given, its distance. ``bottom`` = (images, labels, distances)
    of each query's farthest results adds a second row per query.
    """
    result_labels = np.asarray(result_labels)
    blocks = [(result_images, result_labels, distances)] + ([bottom] if bottom is not None else [])
    n_cols = 1 + max(np.asarray(labels).shape[1] for _, labels, _ in blocks)
    n_rows = len(query_images) * len(blocks)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.4 * n_cols, 1.5 * n_rows), squeeze=False)
    for q, (query, label) in enumerate(zip(query_images, query_labels)):
        for b, (images, labels, dist) in enumerate(blocks):
            row = axes[q * len(blocks) + b]
            if b == 0:
                _show(row[0], query, f"query\n{_short(class_names[label])}")
            else:
                row[0].axis("off")
                row[0].text(
                    0.5,
                    0.5,
                    f"farthest {np.asarray(labels).shape[1]}",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
            for j in range(n_cols - 1):
                if j >= np.asarray(labels).shape[1]:
                    row[j + 1].axis("off")
                    continue
                text = _short(class_names[labels[q][j]])
                if dist is not None:
                    text += f"\nd={dist[q][j]:.3f}"
                _show(row[j + 1], images[q][j], text, SAME if labels[q][j] == label else OTHER)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=90)


def plot_precision_recall(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """``curves[name] = (recall, precision)``, one line each."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1),
        title=title or "Precision-recall",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_bars(
    values: Mapping[str, float], path: str | Path, ylabel: str = "mAP", title: str = ""
) -> Path:
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(values)), 3.5))
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylabel=ylabel, title=title, ylim=(0, max(values.values()) * 1.2 if values else 1))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_map_vs_dimension(
    rows: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = ""
) -> Path:
    """``rows[layer] = [(dim, mAP), ...]``; the full dimension is plotted at its true size."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for layer, points in rows.items():
        dims, maps = zip(*sorted(points))
        ax.plot(dims, maps, "o-", label=layer)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="code dimension after PCA", ylabel="mAP", title=title or "mAP against PCA dimension"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
