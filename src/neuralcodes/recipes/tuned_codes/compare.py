"""One comparison of every variant on the same held-out protocol: each held-out image queries all the others.

Rows: the ConvNet's classification codes (L5 / L6 / L7); its conv5 map pooled with MAC, SPoC, GeM
p = 3 and GeM with p learned (the network frozen), each also PCA-whitened and with learned
whitening (fitted on in-domain training codes); every fine-tuned run given (and its codes with
learned whitening); the classification code of every ResNet-18 classifier run given;
EfficientNet-Lite0 off the shelf (ImageNet: it has seen the held-out classes); and the best
variant of each family compressed to ``compress_dim`` dimensions by PCA, plain and whitened. The best variant that never saw
a held-out class is compared with the best classification layer by a paired bootstrap over the
queries.

    OUT/comparison.json     protocol, rows, best variants, the paired interval, figure paths
    OUT/per_query_ap.npz    every row's per-query AP (row order), for later paired analyses
    OUT/figures/*.png       mAP per variant, t-SNE of chosen variants
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuralcodes import io
from neuralcodes.config import MAX_IMAGE_SIZE, MAX_SEED, option
from neuralcodes.data.imageset import Dataset
from neuralcodes.plots.tuned_codes import plot_map_bars, plot_tsne
from neuralcodes.progress import console
from neuralcodes.recipes.tuned_codes.base import Base, open_base, pretrained_base
from neuralcodes.recipes.tuned_codes.train import load_tuned, subset
from neuralcodes.recipes.tuned_codes.tsne import tsne_pair
from neuralcodes.recipes.tuned_codes.variants import (
    ImageSets,
    Variant,
    compressed_variants,
    feature_maps,
    learn_gem_power,
    network_variants,
    pooled_variants,
    whitened_variants,
)
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.statistics import paired_bootstrap
from neuralcodes.runs import Run


@dataclass
class CompareOptions:
    tuned: Sequence[str] = ()  # fine-tuning runs (`neuralcodes tuned train`)
    classifiers: Sequence[str] = ()  # ResNet-18 classifier runs (`neuralcodes tuned classifier`)
    efficientnet: bool = True  # EfficientNet-Lite0 off the shelf
    image_size: int = 128
    fit_images: int = 5000  # in-domain training images whitening and PCA are fitted on
    p_images: int = 1000  # of those, whose maps learn GeM's p
    p_steps: int = 200
    compress_dim: int = 128
    distractors: int = 2000  # in-domain test images in the t-SNE figures
    tsne: bool = True
    tsne_images: int = 2000
    tsne_variants: Sequence[str] = field(
        default_factory=tuple
    )  # names, or ["all"]; empty: a default choice
    n_resamples: int = 10_000
    seed: int = 0
    bf16: bool = True
    batch_size: int = 256
    device: str | None = None
    data: str | None = None

    def validate(self) -> "CompareOptions":
        """Before the base opens: a count of 0 failed minutes later as "indices must be a non-empty 1-D array"."""
        for name in (
            "image_size",
            "fit_images",
            "p_images",
            "p_steps",
            "compress_dim",
            "distractors",
            "tsne_images",
            "n_resamples",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{option(name)} must be at least 1, got {getattr(self, name)}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(
                f"{option('image_size')} must be at most {MAX_IMAGE_SIZE}, got {self.image_size}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"{option('seed')} must be in [0, {MAX_SEED}], got {self.seed}")
        return self


def compare(
    base_run: str | Path,
    out: str | Path,
    options: CompareOptions | None = None,
    dataset: Dataset | None = None,
) -> dict:
    """Measure every variant; write OUT/comparison.json, OUT/per_query_ap.npz and figures; return the JSON."""
    opt = (options or CompareOptions()).validate()
    out = Path(out)
    base = open_base(str(base_run), dataset, opt.device, opt.data)
    if base.classifier is None:
        raise ValueError(
            f"--base {base_run}: the comparison starts from a classifier run, whose classification codes it beats"
        )
    split, all_labels = base.split, np.asarray(base.dataset.train.labels)
    sets = ImageSets(
        split.ood,
        subset(split.train, opt.fit_images, opt.seed, 1),
        subset(split.test, opt.distractors, opt.seed, 3),
    )
    fit_labels = base.labels[sets.fit]
    kw = {"bf16": opt.bf16, "batch_size": opt.batch_size}

    variants = _classification_variants(base, sets, opt, **kw)
    p_idx = sets.fit[: opt.p_images]
    learned_p = learn_gem_power(
        feature_maps(base, p_idx, opt.bf16), base.labels[p_idx], opt.p_steps, opt.seed
    )
    console.print(f"GeM power learned on frozen {base.label} maps: p = {learned_p:.3f}")
    for v in pooled_variants(base, sets, learned_p, f"{base.label} {base.map_name}", **kw):
        variants += [v, *whitened_variants(v, fit_labels)]
    for run in opt.tuned:
        variants += _tuned_variants(run, base, sets, fit_labels, opt)
    if opt.efficientnet:
        effnet = pretrained_base("efficientnet_lite0", base, opt.image_size)
        variants += pooled_variants(
            effnet, sets, None, f"{effnet.label} {effnet.map_name}", "off-the-shelf", **kw
        )
    ood_labels = all_labels[sets.ood]
    rows, ap = _score(variants, ood_labels)
    ap = _add_compressed(variants, rows, ap, ood_labels, opt.compress_dim)

    result = {
        "protocol": _protocol(base, sets, ood_labels, learned_p, opt.compress_dim),
        "rows": rows,
        **_best(rows, ap, opt),
    }
    out.mkdir(parents=True, exist_ok=True)
    io.save_npz(out / "per_query_ap.npz", ap=ap, names=np.array([r["name"] for r in rows]))
    result["figures"] = _figures(out, variants, rows, ood_labels, base, opt)
    io.write_json(out / "comparison.json", result)
    return result


def _protocol(
    base: Base, sets: ImageSets, ood_labels: np.ndarray, learned_p: float, compress_dim: int
) -> dict[str, Any]:
    """What the comparison measured on: the image sets, the data and split, the base, GeM's learned p."""
    return {
        "n_queries": len(sets.ood),
        "n_classes": len(np.unique(ood_labels)),
        "n_fit": len(sets.fit),
        "n_distractors": len(sets.distractors),
        "data": base.dataset.name,
        "split_sha256": base.split.fingerprint(),
        "base": base.describe(),
        "learned_p_frozen": learned_p,
        "compress_dim": compress_dim,
    }


def _classification_variants(
    base: Base, sets: ImageSets, opt: CompareOptions, **kw: Any
) -> list[Variant]:
    """The base classifier's codes of every layer (the reference), then each other classifier's first layer."""
    names = {layer: f"{base.label} {layer} (classification)" for layer in base.code_layers}
    variants = network_variants(
        base.classifier, names, "classification", base, sets, False, reference=True, **kw
    )
    for run in opt.classifiers:
        other = open_base(str(run), base.dataset, opt.device)
        _same_split(other, base, run)
        name = f"{other.label} {other.code_layers[0]} (classification, {Path(run).name})"
        variants += network_variants(
            other.classifier,
            {other.code_layers[0]: name},
            "classification",
            other,
            sets,
            False,
            **kw,
        )
    return variants


def _add_compressed(
    variants: list[Variant],
    rows: list[dict],
    ap: np.ndarray,
    ood_labels: np.ndarray,
    compress_dim: int,
) -> np.ndarray:
    """The best of each family, separately among networks that did and did not see the held-out classes,
    compressed to ``compress_dim``: appended to ``variants`` and ``rows``; returns ``ap`` with their rows."""
    for group in dict.fromkeys((v.family, v.saw_held_out) for v in variants):
        best = max(
            (i for i, v in enumerate(variants) if (v.family, v.saw_held_out) == group),
            key=lambda i: rows[i]["mAP"],
        )
        small = compressed_variants(variants[best], compress_dim)
        if small:
            variants += small
            more_rows, more_ap = _score(small, ood_labels)
            rows += more_rows
            ap = np.concatenate([ap, more_ap])
    return ap


def _tuned_variants(
    run: str, base: Base, sets: ImageSets, fit_labels: np.ndarray, opt: CompareOptions
) -> list[Variant]:
    net, cfg, tuned_base = load_tuned(run, base.dataset, opt.device)
    _same_split(tuned_base, base, run)
    parts = [cfg.loss, cfg.mining, "augmented" if cfg.augment else "no augmentation"]
    if cfg.whitening != "none":
        parts.append(f"{cfg.whitening} whitening layer")
    pooling = cfg.pooling.upper() if cfg.pooling != "gem" else "GeM"
    name = f"{tuned_base.label} {pooling} fine-tuned {Path(run).name} ({', '.join(parts)})"
    best_epoch = Run(run).metrics().get("tuned", {}).get("best_epoch")
    note = f"best epoch {best_epoch}" + (f", p = {net.p:.2f}" if net.p is not None else "")
    (v,) = network_variants(
        net,
        {"code": name},
        "fine-tuned",
        tuned_base,
        sets,
        tuned_base.saw_held_out,
        opt.bf16,
        opt.batch_size,
        note,
    )
    return [v, whitened_variants(v, fit_labels)[1]]  # + learned whitening, cirtorch's last step


def _same_split(other: Base, base: Base, run: str | Path) -> None:
    if (
        other.split.fingerprint() != base.split.fingerprint()
        or other.dataset.checksum != base.dataset.checksum
    ):
        raise ValueError(
            f"{run} was made on other data or another split than the base run {base.run.root if base.run else ''}: "
            "every compared variant must retrieve the same held-out images"
        )


def _score(variants: Sequence[Variant], ood_labels: np.ndarray) -> tuple[list[dict], np.ndarray]:
    rows, ap = [], []
    for v in variants:
        m = retrieval_metrics(v.ood, ood_labels, ks=(10,))
        ap.append(m["AP"])
        rows.append(
            {
                "name": v.name,
                "family": v.family,
                "dim": v.dim,
                "mAP": m["mAP"],
                "mAP@R": m["mAP@R"],
                "P@10": m["P@10"],
                "seconds": v.seconds,
                "ms_per_image": 1000 * v.seconds / len(ood_labels),
                "saw_held_out": v.saw_held_out,
                "reference": v.reference,
                "of_reference": v.of_reference,
                "note": v.note,
            }
        )
    return rows, np.stack(ap)


def _best(rows: list[dict], ap: np.ndarray, opt: CompareOptions) -> dict:
    """The best variant among those that never saw a held-out class (other than the reference codes
    themselves and their compressed forms), and overall, against the best classification layer of the base network."""
    ref = max((i for i, r in enumerate(rows) if r["reference"]), key=lambda i: rows[i]["mAP"])
    unseen = [
        i
        for i, r in enumerate(rows)
        if not (r["saw_held_out"] or r["reference"] or r["of_reference"])
    ]
    best = max(unseen, key=lambda i: rows[i]["mAP"])
    overall = max(range(len(rows)), key=lambda i: rows[i]["mAP"])
    interval = paired_bootstrap(ap[best], ap[ref], n_resamples=opt.n_resamples, seed=opt.seed)
    return {
        "best_classification": rows[ref]["name"],
        "best_unseen": rows[best]["name"],
        "best_overall": rows[overall]["name"],
        "gain_over_classification": interval,
    }


def _figures(
    out: Path,
    variants: list[Variant],
    rows: list[dict],
    ood_labels: np.ndarray,
    base: Base,
    opt: CompareOptions,
) -> list[dict]:
    figures = out / "figures"
    entries = [{"path": plot_map_bars(rows, figures / "map_per_variant.png"), "variant": None}]
    if opt.tsne:
        by_name = {v.name: v for v in variants}
        chosen = list(opt.tsne_variants) or _default_tsne_choice(rows)
        if chosen == ["all"]:
            chosen = list(by_name)
        unknown = [n for n in chosen if n not in by_name]
        if unknown:
            raise ValueError(
                f"unknown t-SNE variant(s) {unknown}; the variants are: {', '.join(by_name)}"
            )
        class_names = base.dataset.train.class_names
        for i, name in enumerate(chosen):
            v = by_name[name]
            pair = tsne_pair(
                v.ood, ood_labels, v.distractors, opt.tsne_images, opt.distractors, opt.seed
            )
            entries.append(
                {
                    "path": plot_tsne(pair, class_names, figures / f"tsne_{i:02d}.png", title=name),
                    "variant": name,
                }
            )
    return [{"path": str(e["path"].relative_to(out)), "variant": e["variant"]} for e in entries]


def _default_tsne_choice(rows: list[dict]) -> list[str]:
    """The best classification layer, GeM p = 3 of its map, the best fine-tuned run that never saw a
    held-out class, and the best variant of all."""
    classification = max((r for r in rows if r["reference"]), key=lambda r: r["mAP"])
    gem = [r for r in rows if r["family"] == "pooled" and r["name"].endswith("GeM p=3")]
    tuned = [r for r in rows if r["family"] == "fine-tuned" and not r["saw_held_out"]]
    best = max(rows, key=lambda r: r["mAP"])
    chosen = [
        classification,
        *gem[:1],
        *([max(tuned, key=lambda r: r["mAP"])] if tuned else []),
        best,
    ]
    return list(dict.fromkeys(r["name"] for r in chosen))
