"""The retrieval-tuned-codes sections: the comparison table (from OUT/comparison.json) and a fine-tuning run."""

from __future__ import annotations

import shutil
from pathlib import Path

from neuralcodes import io
from neuralcodes.report.document import figure, table, to_html
from neuralcodes.runs import Run

GOAL = 0.15  # the issue's target: OOD mAP this far above the best classification layer


def comparison_section(result: dict, figure_prefix: str = "") -> str:
    """Markdown: protocol, one row per variant, the best variant and its paired interval, figures."""
    proto = result["protocol"]
    out = [
        "## Retrieval-tuned codes: one comparison\n",
        (
            f"{proto['n_queries']:,} images of {proto['n_classes']} held-out classes; each queries all the others "
            f"(leave-one-out, Euclidean distance on L2-normalised codes). Whitening and PCA are fitted on "
            f"{proto['n_fit']:,} in-domain training images; GeM's learned p on the frozen network is "
            f"{proto['learned_p_frozen']:.2f}. Time: computing the held-out codes, per image (variants from one "
            "forward pass share its time; whitening and PCA add theirs). 'saw held-out' marks networks trained on images of the held-out classes "
            "(ImageNet pretraining).\n"
        ),
    ]
    rows = [
        [
            r["name"],
            r["dim"],
            r["mAP"],
            r["mAP@R"],
            r["P@10"],
            f"{r['ms_per_image']:.2f}",
            "yes" if r["saw_held_out"] else "no",
        ]
        for r in result["rows"]
    ]
    out.append(
        table(["variant", "dim", "mAP", "mAP@R", "P@10", "codes: ms / image", "saw held-out"], rows)
    )
    out.append(verdict(result))
    for entry in result.get("figures", []):
        caption = (
            "mAP per variant (hatched: saw the held-out classes)"
            if entry["variant"] is None
            else f"t-SNE of {entry['variant']}: held-out codes coloured by class; right: among grey in-domain "
            "test images"
        )
        out.append(figure(figure_prefix + entry["path"], caption))
    return "\n".join(out)


def verdict(result: dict) -> str:
    """The best variant trained only on in-domain classes, by how much it beats the classification codes."""
    by_name = {r["name"]: r for r in result["rows"]}
    ref, best = by_name[result["best_classification"]], by_name[result["best_unseen"]]
    text = (
        f"\n**Best retrieval variant trained only on the in-domain classes: {best['name']}** ({best['dim']}-d), "
        f"mAP {best['mAP']:.4f} against {ref['mAP']:.4f} for the best classification layer ({ref['name']}, "
        f"{ref['dim']}-d)"
    )
    interval = result["gain_over_classification"]
    diff = interval["mean_difference"]
    text += (
        f": {diff:+.4f} mAP, {100 * interval['confidence']:.0f}% paired bootstrap interval "
        f"[{interval['low']:+.4f}, {interval['high']:+.4f}] over the {interval['n']:,} queries"
    )
    if interval["low"] > 0:
        text += ": it beats the classification codes. "
    elif interval["high"] < 0:
        text += ": the classification codes stay the best codes that never saw a held-out class. "
    else:
        text += ": no difference these queries can resolve. "
    text += f"The goal (at least +{GOAL} mAP over the classification codes) is " + (
        "reached." if diff >= GOAL else f"not reached ({GOAL - diff:.3f} short)."
    )
    overall = by_name[result["best_overall"]]
    if overall["name"] != best["name"]:
        text += f" Best of all: {overall['name']} (mAP {overall['mAP']:.4f}), " + (
            "whose weights saw the held-out classes." if overall["saw_held_out"] else ""
        )
    return text + "\n"


def tuned_run_section(run: Run) -> str:
    """Markdown: a fine-tuning run's setting, validation mAP per epoch, and its curves."""
    config, metrics = run.config(), run.metrics().get("tuned")
    if metrics is None:
        raise ValueError(
            f"{run.root} has not finished fine-tuning: continue it with `neuralcodes tuned train ... --resume`"
        )
    out = [
        f"### Fine-tuning run `{run.root.name}`\n",
        f"Base {metrics['base']['name']} ({metrics['base']['run'] or 'ImageNet weights'}); {config['pooling']} pooling"
        f"{' (p learned)' if config['learn_p'] else ''}, whitening: {config['whitening']}; {config['loss']} loss, "
        f"{config['mining']} mining, {config['m_per_class']} images x {config['batch_size'] // config['m_per_class']} "
        f"classes per batch, {config['batches_per_epoch']} batches per epoch, lr {config['lr']}, augmentation "
        f"{'on' if config['augment'] else 'off'}. Validation mAP on {metrics['n_val']:,} in-domain validation "
        f"images: {metrics['start_val_mAP']:.4f} at the start, {metrics['best_val_mAP']:.4f} at epoch "
        f"{metrics['best_epoch']}"
        + (f" (p = {metrics['p']:.3f})" if metrics.get("p") else "")
        + ".\n",
    ]
    history = run.history()
    # train_active and train_gap: whether a loss near the margin means collapse or progress (learning/diagnostics.py)
    keys = [
        k
        for k in (
            "train_loss",
            "train_loss_all",
            "train_active",
            "train_gap",
            "train_spread",
            "train_p",
            "val_mAP",
            "val_mAP@R",
        )
        if any(k in h for h in history)
    ]
    out.append(table(["epoch", *keys], [[h["epoch"], *[h.get(k) for k in keys]] for h in history]))
    if (run.figures / "tuning_curves.png").exists():
        out.append(
            figure(
                "figures/tuning_curves.png",
                "Validation mAP per epoch (0: the classifier), training loss "
                "and the batches' triplets (active fraction, distances, gap)",
            )
        )
    return "\n".join(out)


def write_comparison_report(
    folder: str | Path, tuned_runs: tuple[str | Path, ...] = ()
) -> tuple[Path, Path]:
    """OUT/report.md and OUT/report.html from OUT/comparison.json (and the fine-tuning runs' JSON)."""
    folder = Path(folder)
    path = folder / "comparison.json"
    if not path.exists():
        if (folder / "config.json").exists():  # a training run, not a comparison folder
            raise ValueError(
                f"{folder} is a training run, not a `tuned compare` folder: report a run with "
                f"`neuralcodes report {folder}`, or pass the --out folder of `neuralcodes tuned compare`"
            )
        raise FileNotFoundError(
            f"{path} is missing: run `neuralcodes tuned compare --out {folder} ...` first"
        )
    result = io.read_json(path)
    sections = [f"# Retrieval-tuned codes: `{folder.name}`\n", comparison_section(result)]
    for r in map(Run, tuned_runs):
        # Copied, so the report stays whole when its folder is moved.
        curves = r.figures / "tuning_curves.png"
        if curves.exists():
            (folder / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(curves, folder / "figures" / f"tuning_{r.root.name}.png")
        sections.append(
            tuned_run_section(r).replace(
                "figures/tuning_curves.png", f"figures/tuning_{r.root.name}.png"
            )
        )
    text = "\n".join(sections)
    md, html = folder / "report.md", folder / "report.html"
    io.write_text(md, text)
    io.write_text(html, to_html(text, f"Retrieval-tuned codes: {folder.name}"))
    return md, html
