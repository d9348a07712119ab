"""Retrieval figures: ranked results (Babenko et al. Fig. 2/3), precision-recall, mAP per layer, PCA."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.plots.style import save_figure

SAME, OTHER = "#2ca02c", "#d62728"


def _show(ax: plt.Axes, image: np.ndarray, title: str, color: str | None = None, fontsize: int = 7) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize, color=color or "black")
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_color(color)
            spine.set_linewidth(3)


def plot_ranked_results(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    queries: Sequence[int],
    results: np.ndarray,
    path: str | Path,
    distances: np.ndarray | None = None,
    title: str = "",
    result_title: str = "",
) -> Path:
    """One row per query: the query, then its results in rank order, framed green (same class) or
    red (other class) and labelled with the class name (and the distance when given).

    ``images`` and ``labels`` index the database; ``results[i]`` holds the database indices for
    ``queries[i]`` (itself a database index).
    """
    n_rows, n_cols = len(queries), results.shape[1] + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.35 * n_cols, 1.45 * n_rows), squeeze=False)
    for row, q in enumerate(queries):
        _show(axes[row, 0], images[q], f"query\n{class_names[labels[q]][:14]}", None)
        axes[row, 0].set_facecolor("#ddd")
        for col, r in enumerate(results[row], start=1):
            same = labels[r] == labels[q]
            text = class_names[labels[r]][:14]
            if distances is not None:
                text += f"\nd={distances[row, col - 1]:.3f}"
            _show(axes[row, col], images[r], text, SAME if same else OTHER)
    if title:
        fig.suptitle(title + (f" — {result_title}" if result_title else ""), fontsize=10)
    return save_figure(fig, path, dpi=90)


def plot_precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """``curves[name] = (recall, precision)``, one line each."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title=title or "Precision-recall")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_bars(values: Mapping[str, float], path: str | Path, ylabel: str = "mAP", title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(values)), 3.5))
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylabel=ylabel, title=title, ylim=(0, max(values.values()) * 1.2 if values else 1))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_map_vs_dimension(rows: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """``rows[layer] = [(dim, mAP), ...]``; the full dimension is plotted at its true size."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for layer, points in rows.items():
        dims, maps = zip(*sorted(points))
        ax.plot(dims, maps, "o-", label=layer)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="code dimension after PCA", ylabel="mAP", title=title or "mAP against PCA dimension")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
