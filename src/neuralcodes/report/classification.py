"""Report sections on training and classification quality."""

from __future__ import annotations

from typing import Any

from neuralcodes.report.document import figure, table

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def classification_section(metrics: dict[str, Any], history: list[dict[str, Any]]) -> str:
    out = ["## Classification\n"]
    cls = metrics.get("classification")
    if cls:
        rows = [
            [SPLIT_NAMES.get(k, k), v["loss"], v["accuracy"], v["top5"]] for k, v in cls.items()
        ]
        out.append("Best epoch's weights, dropout off.\n")
        out.append(table(["split", "cross-entropy", "accuracy", "top-5 accuracy"], rows))
    training = metrics.get("training")
    if training and history:
        rate = sum(h["images_per_s"] for h in history) / len(history)
        seconds = sum(h["seconds"] for h in history)
        monitor = training.get("selected_by", "val_loss")
        what = SELECTED_BY.get(monitor, monitor)
        kept = f"epoch {training['best_epoch']} ({what} {training[f'best_{monitor}']:.4f})"
        out.append(
            f"Trained {training['epochs_run']} epochs ({seconds / 60:.1f} min of training, {rate:.0f} images/s on average); "
            + (
                f"early stopping kept {kept}.\n"
                if training.get("stopped_early")
                else f"best {kept}.\n"
            )
        )
        out.append(
            figure(
                "figures/training_curves.png", "Training and validation loss and accuracy per epoch"
            )
        )
    return "\n".join(out)


SELECTED_BY = {
    "val_loss": "validation loss",
    **{
        f"val_mAP_{layer}": f"class-disjoint validation mAP of {layer}"
        for layer in ("L5", "L6", "L7", "pool")
    },
}


def variants_section(metrics: dict[str, Any]) -> str:
    variants = metrics.get("variants")
    if not variants:
        return ""
    seeded = any(v.get("test_accuracy_seeds") for v in variants.values())
    out = [
        "## What improves test accuracy\n",
        "Each row is a separate training run on the same split, differing only in the option named"
        + (" (and, across seeds, in the training seed).\n" if seeded else ".\n"),
    ]
    rows = []
    for name, v in variants.items():
        row = [
            name,
            v["test_loss"],
            v["test_accuracy"],
            v["test_top5"],
            v["best_epoch"],
            *(v.get("mAP", {}).get(layer) for layer in ("L5", "L6", "L7")),
        ]
        if seeded:
            seeds = v.get("test_accuracy_seeds") or []
            row += [len(seeds), f"{min(seeds):.4f} - {max(seeds):.4f}" if seeds else ""]
        rows.append(row)
    header = [
        "variant",
        "test cross-entropy",
        "test accuracy",
        "test top-5",
        "best epoch",
        "mAP L5",
        "mAP L6",
        "mAP L7",
    ]
    out.append(table(header + (["seeds", "test accuracy over seeds"] if seeded else []), rows))
    pending = metrics.get("variants_pending")
    if pending:
        out.append(
            f"\nStill to train: {', '.join(pending)} (this report was written while the run was under way; "
            "`neuralcodes run ... --resume` carries it on and `neuralcodes report RUN` adds the rows).\n"
        )
    return "\n".join(out)
