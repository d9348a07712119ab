"""Figures of retrieval-tuned codes: mAP per variant, t-SNE maps, fine-tuning curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from neuralcodes.plots.save import save_figure

FAMILY_COLOURS = {
    "classification": "#7f7f7f",
    "pooled": "#1f77b4",
    "fine-tuned": "#2ca02c",
    "off-the-shelf": "#9467bd",
    "compressed": "#ff7f0e",
}


def plot_map_bars(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Horizontal bars of held-out mAP, one per variant, coloured by family; hatched: saw the held-out classes."""
    fig, ax = plt.subplots(figsize=(13, 0.32 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows):
        ax.barh(
            yi,
            row["mAP"],
            color=FAMILY_COLOURS.get(row["family"], "#17becf"),
            hatch="//" if row["saw_held_out"] else None,
            edgecolor="white",
        )
        ax.text(row["mAP"], yi, f" {row['mAP']:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, [textwrap.fill(f"{r['name']} ({r['dim']}-d)", 70) for r in rows], fontsize=7)
    ax.set_xlabel("mAP on the held-out classes (leave-one-out)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in FAMILY_COLOURS.values()]
    ax.legend(
        handles, list(FAMILY_COLOURS), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    ax.set_xlim(0, max(r["mAP"] for r in rows) * 1.18)
    return save_figure(fig, path)


def plot_tsne(pair: Any, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Left: held-out codes in 2-D coloured by class; right: the same among grey in-domain distractors."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    classes = np.unique(pair.labels)
    colours = _class_colours(len(classes))
    n = len(pair.labels)
    right.scatter(
        pair.mixed[n:, 0], pair.mixed[n:, 1], s=3, c="#c8c8c8", label="in-domain distractors"
    )
    for i, c in enumerate(classes):
        mask = pair.labels == c
        name = class_names[c].split(",")[0]
        left.scatter(
            pair.alone[mask, 0],
            pair.alone[mask, 1],
            s=4,
            color=colours[i % len(colours)],
            label=name,
        )
        right.scatter(
            pair.mixed[:n][mask, 0], pair.mixed[:n][mask, 1], s=4, color=colours[i % len(colours)]
        )
    left.set_title("held-out classes", fontsize=9)
    right.set_title(f"with {len(pair.mixed) - n} in-domain test images (grey)", fontsize=9)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    left.legend(fontsize=6, markerscale=3, loc="best")
    fig.suptitle(f"t-SNE: {title}", fontsize=10)
    return save_figure(fig, path)


def _class_colours(n: int) -> list:
    """Qualitative colours without tab10's / tab20's greys, which the distractors use."""
    if n <= 10:
        return [c if i != 7 else "#000000" for i, c in enumerate(plt.get_cmap("tab10").colors)]
    return [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]


def plot_tuning_curves(
    history: Sequence[dict[str, Any]], path: str | Path, margin: float | None = None
) -> Path:
    """Validation mAP per epoch (epoch 0: the starting weights), the training loss, and what the batches'
    triplets looked like (``train_active``, ``train_d_ap``, ... of the fine-tuning's triplet figures): the loss
    averaged over the violating triplets alone tends to the margin whether the codes collapse or improve, and
    these panels tell which. Panels whose figures the history lacks (an older run) are left empty."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    (ax_map, ax_loss, ax_active), (ax_dist, ax_gap, ax_p) = axes
    ax_map.plot([h["epoch"] for h in history], [h["val_mAP"] for h in history], "o-")
    ax_map.set(xlabel="epoch", ylabel="mAP", title="in-domain validation mAP")
    trained = [h for h in history if "train_loss" in h]
    epochs = [h["epoch"] for h in trained]

    def curve(ax, key: str, label: str, style: str = "o-") -> None:
        if any(key in h for h in trained):
            ax.plot(epochs, [h.get(key, float("nan")) for h in trained], style, label=label)

    curve(ax_loss, "train_loss", "optimised: mean over the violating triplets")
    curve(ax_loss, "train_loss_all", "mean over all triplets of the batch", "s--")
    if margin is not None:
        ax_loss.axhline(margin, color="#7f7f7f", lw=0.8, ls=":", label=f"margin {margin:g}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    curve(ax_active, "train_active", "violating the margin")
    ax_active.set(
        xlabel="epoch",
        ylabel="fraction of the batch's triplets",
        title="active triplets",
        ylim=(0, 1.02),
    )
    curve(ax_dist, "train_d_ap", "D(anchor, positive)")
    curve(ax_dist, "train_d_an", "D(anchor, negative)")
    curve(ax_dist, "train_spread", "spread: D of any two codes", "s--")
    ax_dist.set(
        xlabel="epoch", ylabel="distance", title="mean distances in the batch (0: collapse)"
    )
    curve(ax_gap, "train_gap", "D(a, n) - D(a, p)")
    if margin is not None:
        ax_gap.axhline(margin, color="#7f7f7f", lw=0.8, ls=":", label=f"margin {margin:g}")
    ax_gap.axhline(0.0, color="black", lw=0.6)
    ax_gap.set(xlabel="epoch", ylabel="distance", title="mean gap over all triplets")
    curve(ax_p, "train_p", "GeM p")
    ax_p.set(xlabel="epoch", ylabel="p", title="GeM power")
    for ax in (ax_loss, ax_active, ax_dist, ax_gap):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, path)
