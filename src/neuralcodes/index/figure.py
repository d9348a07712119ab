"""A figure of search results, laid out like the report's ranked results: one row per query.

Results are framed green (same label as the query) or red (another label) when the query's label is
known, as in :func:`neuralcodes.plots.retrieval.plot_ranked_results`; otherwise unframed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.index.collection import Skipped, decode_bytes
from neuralcodes.index.index import Index, SearchResults
from neuralcodes.plots.retrieval import (  # the report's colours; importing plots selects Agg
    OTHER,
    SAME,
)
from neuralcodes.plots.save import save_figure

THUMB = 96


def plot_search_results(
    index: Index,
    query_images: Sequence[np.ndarray],
    query_names: Sequence[str],
    results: SearchResults,
    path: str | Path,
    query_labels: Sequence[str | None] | None = None,
) -> Path:
    """Write a PNG: each query image, then its results with label and distance."""
    k = max((len(h) for h in results.hits), default=0)
    rows, cols = len(query_images), k + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.35 * cols, 1.55 * rows), squeeze=False)
    labels = list(query_labels) if query_labels is not None else [None] * rows
    for r, (image, name) in enumerate(zip(query_images, query_names)):
        _show(axes[r, 0], image, f"query\n{Path(name).name[:16]}", None)
        for c in range(1, cols):
            ax = axes[r, c]
            if c > len(results.hits[r]):
                ax.axis("off")
                continue
            hit = results.hits[r][c - 1]
            color = None if labels[r] is None else (SAME if hit.label == labels[r] else OTHER)
            text = f"{(hit.label or Path(hit.path).name)[:14]}\nd={hit.distance:.3f}"
            _show(ax, _thumbnail(index, hit.id), text, color)
    return save_figure(fig, path, dpi=90)


def _thumbnail(index: Index, image_id: int) -> np.ndarray:
    try:
        return decode_bytes(index.read_image(image_id), str(image_id), THUMB).pixels
    except (FileNotFoundError, Skipped):  # moved or deleted since indexed: a grey square says so
        return np.full((THUMB, THUMB, 3), 200, np.uint8)


def _show(ax: plt.Axes, image: np.ndarray, title: str, color: str | None) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7, color="black")
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_color(color)
            spine.set_linewidth(3)
