"""The neural-codes study of a trained run: codes per layer -> leave-one-out retrieval on the
held-out classes -> mAP, figures -> PCA compression (Babenko et al., sections 4-5)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from neuralcodes.data.batches import DeviceImages
from neuralcodes.data.imageset import Dataset, ImageSet
from neuralcodes.data.splits import Split
from neuralcodes.plots.retrieval import (
    plot_bars,
    plot_map_vs_dimension,
    plot_precision_recall,
    plot_ranked_results,
)
from neuralcodes.progress import console
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.recipes.neural_codes.train import Prepared, open_trained
from neuralcodes.retrieval.codes import Codes, ZeroCodeWarning, extract_codes
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.pca import DEFAULT_PCA_DIMS, pca_study
from neuralcodes.retrieval.search import search
from neuralcodes.retrieval.statistics import paired_comparisons
from neuralcodes.runs import Run

CODE_LAYERS = ("L5", "L6", "L7")
KS = (1, 5, 10, 100)


@dataclass
class StudyOptions:
    layers: Sequence[str] = CODE_LAYERS
    pca_dims: Sequence[int | None] = DEFAULT_PCA_DIMS
    pca_fit_images: int = (
        10_000  # in-domain train images the PCA is learned on (memory: 16,384-d codes)
    )
    whiten: bool = False
    n_shown: int = 10  # queries in the ranked-results figures
    code_dtype: str = "float32"
    device: str | None = None
    scales: Sequence[float] = (
        1.0,
    )  # multi-scale codes (e.g. 1, 0.7071, 1.4142), PCA fitted on the same views
    flip: bool = False  # codes averaged with the mirrored image's


def _extract(
    model,
    images: DeviceImages,
    indices: np.ndarray,
    layers: Sequence[str],
    bf16: bool,
    opt: StudyOptions,
) -> tuple[dict, dict]:
    """Codes plus the count of all-zero codes per layer (recorded, not only warned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ZeroCodeWarning)
        codes = extract_codes(
            model, images, indices, layers, autocast=bf16, scales=opt.scales, flip=opt.flip
        )
    for w in caught:
        if issubclass(w.category, ZeroCodeWarning):
            console.print(f"[yellow]warning:[/yellow] {w.message}")
    zero = {layer: int((np.abs(c).sum(axis=1) == 0).sum()) for layer, c in codes.items()}
    return codes, zero


def retrieval_study(
    run: Run | str | Path,
    dataset: Dataset | None = None,
    options: StudyOptions | None = None,
    split: Split | None = None,
) -> dict:
    """Compute codes, mAP per layer, figures and the PCA table; store them in the run folder.
    ``split``: the run's split when the caller holds it already (``neuralcodes run`` draws it once)."""
    run = run if isinstance(run, Run) else Run(run)
    opt = options or StudyOptions()
    p, cfg = open_trained(run, dataset, opt.device, split=split)
    model, images, split, data = p.model, p.images, p.split, p.dataset.train

    ood_labels = np.asarray(data.labels)[split.ood]
    ood_codes, zero = _extract(model, images, split.ood, opt.layers, cfg.bf16, opt)
    for layer, c in ood_codes.items():
        Codes(c, ood_labels, split.ood, layer).save(
            run.codes_dir / f"ood_{layer}.npz", dtype=opt.code_dtype
        )

    layers, curves, shown_same, per_query_ap = {}, {}, {}, {}
    queries = np.arange(min(opt.n_shown, len(split.ood)))
    ks = tuple(
        k for k in KS if k < len(split.ood)
    )  # a small collection has fewer results per query
    shown_k = min(5, len(split.ood) - 1)
    for layer, c in ood_codes.items():
        m = retrieval_metrics(c, ood_labels, ks=ks)  # ties in distance broken by database index
        per_query_ap[layer] = m["AP"]
        layers[layer] = _layer_row(m, int(c.shape[1]), ks)
        curves[layer] = (m["recall_levels"], m["precision_at_recall"])
        top, dist = search(c[queries], c, k=shown_k, exclude=queries)
        shown_same[layer] = float((ood_labels[top] == ood_labels[queries, None]).mean())
        _plot_results(run, data, split.ood, queries, (top, dist), layer)
    plot_bars(
        {k: v["mAP"] for k, v in layers.items()},
        run.figures / "map_per_layer.png",
        title="mAP per layer",
    )
    plot_precision_recall(curves, run.figures / "precision_recall.png")
    n_classes = len(np.unique(ood_labels))
    # Layers are scored on the same queries, so a paired interval of the mean AP difference says whether
    # one layer retrieves better; the mAPs' separate standard errors mostly measure how queries differ.
    retrieval = {
        "n_queries": len(split.ood),
        "n_classes": n_classes,
        "layers": layers,
        "ties": "index",
        "paired": paired_comparisons(per_query_ap),
        "zero_codes": zero,
        "views": {"scales": [float(x) for x in opt.scales], "flip": bool(opt.flip)},
        "shown_same_class": shown_same,
    }
    run.update_metrics("retrieval", retrieval)

    pca = _pca_study(run, p, cfg, opt, ood_codes, ood_labels)
    return {"retrieval": retrieval, "pca": pca}


def _layer_row(m: dict, dim: int, ks: tuple[int, ...]) -> dict:
    """A layer's row of the retrieval table from its metrics ``m``: mAP with its standard error, mAP@R, P@k."""
    se = float(np.std(m["AP"], ddof=1) / np.sqrt(len(m["AP"])))
    return {
        "dim": dim,
        "mAP": m["mAP"],
        "mAP_se": se,
        "mAP@R": m["mAP@R"],
        **{f"P@{k}": m[f"P@{k}"] for k in ks},
    }


def _pca_study(
    run: Run,
    p: Prepared,
    cfg: ClassifyConfig,
    opt: StudyOptions,
    ood_codes: dict[str, np.ndarray],
    ood_labels: np.ndarray,
) -> dict:
    """mAP against PCA dimension per layer (``p``: the opened run), stored in the run's ``pca`` metrics."""
    # PCA is learned on in-domain training images only, never on the held-out set it is scored on.
    rng = np.random.default_rng(cfg.seed)
    fit_idx = np.sort(
        rng.choice(p.split.train, size=min(opt.pca_fit_images, len(p.split.train)), replace=False)
    )
    fit_codes, _ = _extract(p.model, p.images, fit_idx, opt.layers, cfg.bf16, opt)
    pca_layers = {}
    for layer in opt.layers:
        rows = pca_study(
            fit_codes[layer], ood_codes[layer], ood_labels, dims=opt.pca_dims, whiten=opt.whiten
        )
        pca_layers[layer] = [
            {"dim": r["dim"], "mAP": r["mAP"], "mAP@R": r["mAP@R"], "pca": r["pca"]} for r in rows
        ]
    plot_map_vs_dimension(
        {k: [(r["dim"], r["mAP"]) for r in v] for k, v in pca_layers.items()},
        run.figures / "pca_map.png",
    )
    pca = {"n_fit": len(fit_idx), "fit_seed": cfg.seed, "whiten": opt.whiten, "layers": pca_layers}
    run.update_metrics("pca", pca)
    return pca


def _plot_results(
    run: Run,
    data: ImageSet,
    ood: np.ndarray,
    queries: np.ndarray,
    found: tuple[np.ndarray, np.ndarray],
    layer: str,
) -> None:
    """The figure of a layer's first held-out queries (positions in ``ood``) and the nearest held-out images
    ``found`` for them (positions and distances)."""
    top, dist = found
    ood_labels = np.asarray(data.labels)[ood]
    plot_ranked_results(
        data.images[ood[queries]],
        ood_labels[queries],
        data.images[ood[top]],
        ood_labels[top],
        data.class_names,
        run.figures / f"results_{layer}.png",
        distances=dist,
        title=f"Layer {layer}: {top.shape[1]} nearest held-out images (green: same class)",
    )
