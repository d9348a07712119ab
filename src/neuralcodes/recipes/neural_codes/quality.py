"""The quality study: choose a retrieval pipeline on classes the network never trained on, then score it once.

Every choice (the layer, whether and how to whiten: output dimension, power, shrinkage; each re-ranking
step's parameters) is made on the leave-one-out mAP of the *class-disjoint validation* images
(``split.val_retrieval``, classes set aside from training with ``--n-val-classes``). Whitening is fitted
on in-domain training codes. The held-out classes are read once, at the end, for the chosen pipelines
and the plain codes of each layer; each row carries its dimension, mAP, mAP@R, P@1, P@10, ms per query,
whether its network saw the held-out classes (never in this recipe) and a paired bootstrap interval of
its AP against plain L7 over the same queries. The representation that scores best on validation is
then re-ranked by each step of ``QualityOptions.reranking`` (query expansion, DBA, diffusion,
k-reciprocal: :mod:`neuralcodes.retrieval.rerank`, no labels read), its parameters chosen on validation;
its row says ``uses_database`` where the step reads the unlabelled database's own structure.

    RUN/metrics.json["quality"]    validation choices (every candidate tried) and the held-out table
    RUN/codes/quality_ap.npz       per-query held-out AP of every row (for intervals between any two)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neuralcodes import io
from neuralcodes.data.imageset import Dataset
from neuralcodes.layers.whitening import eigenbasis, pca_whitening, whiten
from neuralcodes.progress import console
from neuralcodes.recipes.neural_codes.train import open_trained
from neuralcodes.retrieval.codes import extract_codes
from neuralcodes.retrieval.evaluate import retrieval_metrics
from neuralcodes.retrieval.rerank import RERANKERS, parameters, rerank
from neuralcodes.retrieval.statistics import paired_bootstrap
from neuralcodes.runs import Run

BASELINE = "L7"
Transform = Callable[[np.ndarray], np.ndarray]
Grid = Mapping[str, Sequence[Any]]  # parameter -> the values tried (every combination)

# Each re-ranking step's candidates, around the published settings (cirtorch: k 1-10 for QE/DBA; Iscen
# et al.: k 50, k_query 10, gamma 3, alpha 0.99; Zhong et al.: k1 20, k2 6, lambda 0.3), sized for
# some thousands of validation queries on a CPU.
DEFAULT_RERANKING: dict[str, Grid] = {
    # The first full-data study (docs/results/quality) chose k at the top of narrower grids for every
    # step: with 250-500 images a class, neighbourhoods of 20-50 are still mostly relevant.
    "aqe": {"k": [2, 5, 10, 20, 50]},
    "alpha_qe": {"k": [10, 20, 50], "alpha": [1.0, 3.0]},
    "dba": {"k": [5, 10, 20, 50]},
    "dba+qe": {"k_dba": [10, 20, 50], "k_qe": [10, 20, 50]},
    "diffusion": {"k": [5, 10, 30], "k_query": [10, 20, 50]},
    "k_reciprocal": {"k1": [20, 30, 50], "k2": [6, 10], "lambda_": [0.3]},
}


@dataclass
class QualityOptions:
    layers: Sequence[str] = ("L5", "L6", "L7")
    scales: Sequence[float] = (1.0,)
    flip: bool = False
    fit_images: int = 10_000  # in-domain training images the whitening is fitted on
    dims: Sequence[int | None] = (None, 512, 256, 128)  # None: every component
    powers: Sequence[float] = (0.5, 0.25)  # 0.5 = full whitening
    shrinkages: Sequence[float] = (0.0, 0.1, 0.5)
    max_whiten_dim: int = 4096  # the eigen-decomposition is (D, D) in float64: not for 16,384-d L5
    seed: int = 0
    device: str | None = None
    reranking: dict[str, Grid] = field(
        default_factory=lambda: dict(DEFAULT_RERANKING)
    )  # step -> its grid

    def validate(self) -> "QualityOptions":
        if not self.layers or not set(self.layers) <= {"L5", "L6", "L7"}:
            raise ValueError(f"layers must be among L5, L6, L7, got {list(self.layers)}")
        if self.fit_images < 2:
            raise ValueError(f"fit_images must be at least 2 (a covariance), got {self.fit_images}")
        if any(d is not None and d < 1 for d in self.dims):
            raise ValueError(
                f"whitening dimensions must be at least 1 (or None for all), got {list(self.dims)}"
            )
        for method, grid in self.reranking.items():
            for params in expand(grid):
                parameters(
                    method, **params
                )  # an unknown step or parameter: a clear error before any work
        return self


def expand(grid: Grid) -> list[dict[str, Any]]:
    """Every combination of a grid's values, as parameter dicts (an empty grid: the step's defaults)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in product(*(grid[n] for n in names))]


def scores(
    codes: np.ndarray,
    labels: np.ndarray,
    reranking: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Leave-one-out figures of some codes, ranked by distance or re-ranked by the named step
    (:mod:`neuralcodes.retrieval.rerank`): mAP, mAP@R, P@1, P@10 and the per-query AP."""
    ks = tuple(k for k in (1, 10) if k < len(labels))
    if reranking is None:
        m = retrieval_metrics(codes, labels, ks=ks)
    else:
        m = retrieval_metrics(
            None, labels, ks=ks, scores=rerank(reranking, codes, codes, loo=True, **(params or {}))
        )
    return {
        "mAP": m["mAP"],
        "mAP@R": m["mAP@R"],
        **{k: m[k] for k in ("P@1", "P@10") if k in m},
        "AP": m["AP"],
    }


def whitening_grid(options: QualityOptions, dim: int) -> list[dict[str, Any]]:
    """The whitening candidates for ``dim``-d codes (output dimensions above ``dim`` left out)."""
    dims = sorted({d for d in options.dims if d is None or d < dim}, key=lambda d: -(d or dim))
    return [
        {"dim": d, "power": p, "shrinkage": s}
        for d, p, s in product(dims, options.powers, options.shrinkages)
    ]


def choose_whitening(
    val: np.ndarray, val_labels: np.ndarray, fit: np.ndarray, options: QualityOptions
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The whitening (fitted on ``fit``) that scores best on the validation codes, or None when none beats
    leaving the codes as they are; with every candidate's validation mAP."""
    plain = scores(val, val_labels)["mAP"]
    tried: list[dict[str, Any]] = [{"whitening": None, "val_mAP": plain}]
    if val.shape[1] > options.max_whiten_dim:
        return None, tried
    best, best_map = None, plain
    basis = eigenbasis(fit)  # once: every candidate is a cheap function of it
    for params in whitening_grid(options, val.shape[1]):
        try:
            layer = pca_whitening(basis, **params)
        except ValueError as err:  # more components than the fitted codes hold: recorded, not fatal
            tried.append({"whitening": params, "skipped": str(err)})
            continue
        m = scores(whiten(layer, val), val_labels)["mAP"]
        tried.append({"whitening": params, "val_mAP": m})
        if m > best_map:
            best, best_map = params, m
    return best, tried


def _views(codes: dict[str, dict[str, np.ndarray]], chosen: dict[str, Any], name: str) -> Transform:
    if chosen.get(name) is None:
        return lambda x: x
    layer = pca_whitening(codes["fit"][name.split("+")[0]], **chosen[name])
    return lambda x: whiten(layer, x)


def quality_study(
    run: Run | str | Path, dataset: Dataset | None = None, options: QualityOptions | None = None
) -> dict[str, Any]:
    """Choose on the class-disjoint validation classes, then score on the held-out classes; see the module doc.
    Each re-ranking step of ``options.reranking`` (:mod:`neuralcodes.retrieval.rerank`) is tried over its grid
    on the best representation's validation codes; the held-out row uses the parameters chosen there."""
    run = run if isinstance(run, Run) else Run(run)
    opt = (options or QualityOptions()).validate()
    p, cfg = open_trained(run, dataset, opt.device)
    split, labels = p.split, np.asarray(p.dataset.train.labels)
    if not len(split.val_classes):
        raise ValueError(
            f"{run.root} was trained without class-disjoint validation classes, so nothing unseen is left to choose "
            "the pipeline on: train with --n-val-classes (e.g. 20)"
        )
    rng = np.random.default_rng(opt.seed)
    fit_idx = np.sort(
        rng.choice(split.train, size=min(opt.fit_images, len(split.train)), replace=False)
    )

    def extract(indices: np.ndarray) -> dict[str, np.ndarray]:
        return extract_codes(
            p.model,
            p.images,
            indices,
            list(opt.layers),
            cfg.eval_batch_size,
            autocast=cfg.bf16,
            scales=opt.scales,
            flip=opt.flip,
        )

    codes = {"val": extract(split.val_retrieval), "fit": extract(fit_idx)}
    val_labels = labels[split.val_retrieval]

    # 1. Choices on the class-disjoint validation classes only.
    chosen: dict[str, Any] = {}  # representation -> its whitening (None: the plain codes)
    validation: dict[str, Any] = {}
    val_maps: dict[str, float] = {}
    for layer in opt.layers:
        best, tried = choose_whitening(codes["val"][layer], val_labels, codes["fit"][layer], opt)
        validation[layer], chosen[layer], val_maps[layer] = tried, None, tried[0]["val_mAP"]
        if best is not None:
            chosen[f"{layer}+whitened"] = best
            val_maps[f"{layer}+whitened"] = max(t.get("val_mAP", -1.0) for t in tried[1:])
    best_rep = max(val_maps, key=val_maps.get)
    rerank_choice: dict[str, dict[str, Any]] = {}
    val_best = _views(codes, chosen, best_rep)(codes["val"][best_rep.split("+")[0]])
    for method, grid in opt.reranking.items():
        results = [
            (scores(val_best, val_labels, method, params)["mAP"], params) for params in expand(grid)
        ]
        best_map, params = max(results, key=lambda r: r[0])
        rerank_choice[method] = {
            "params": params,
            "val_mAP": best_map,
            "tried": [{"params": q, "val_mAP": m} for m, q in results],
        }

    # 2. The held-out classes, read once: every representation plain, then the best one re-ranked.
    ood = extract(split.ood)
    ood_labels = labels[split.ood]
    rows: list[dict[str, Any]] = []
    for name in chosen:
        t = time.perf_counter()
        x = _views(codes, chosen, name)(ood[name.split("+")[0]])
        s = scores(x, ood_labels)
        rows.append(
            {
                "representation": name,
                "reranking": "none",
                "dim": int(x.shape[1]),
                **s,
                "ms_per_query": 1000 * (time.perf_counter() - t) / len(x),
                "whitening": chosen[name],
                "val_mAP": val_maps[name],
                "saw_held_out": False,
            }
        )
    x = _views(codes, chosen, best_rep)(ood[best_rep.split("+")[0]])
    for method, choice in rerank_choice.items():
        t = time.perf_counter()
        s = scores(x, ood_labels, method, choice["params"])
        rows.append(
            {
                "representation": best_rep,
                "reranking": method,
                "dim": int(x.shape[1]),
                **s,
                "ms_per_query": 1000 * (time.perf_counter() - t) / len(x),
                "params": choice["params"],
                "uses_database": RERANKERS[method].uses_database,
                "val_mAP": choice["val_mAP"],
                "saw_held_out": False,
            }
        )
    per_query = {f"{r['representation']}__{r['reranking']}": r.pop("AP") for r in rows}
    baseline = per_query.get(f"{BASELINE}__none")
    for row, ap in zip(rows, per_query.values()):
        if baseline is not None:
            row["vs_L7"] = paired_bootstrap(ap, baseline, seed=opt.seed)
        # What this row's own step added: re-ranking over its plain codes, whitening over its layer's.
        if row["reranking"] != "none":
            before = f"{row['representation']}__none"
        else:
            before = f"{row['representation'].split('+')[0]}__none"
        if before != f"{row['representation']}__{row['reranking']}":
            row["vs_before_step"] = {
                "before": before.replace("__none", ""),
                **paired_bootstrap(ap, per_query[before], seed=opt.seed),
            }
    grids = {m: {k: list(v) for k, v in g.items()} for m, g in opt.reranking.items()}
    result = {
        "options": {**asdict(opt), "scales": list(opt.scales), "reranking": grids},
        "n_val_queries": len(val_labels),
        "val_classes": list(split.val_classes),
        "n_queries": len(ood_labels),
        "chosen": chosen,
        "best_on_validation": best_rep,
        "validation": validation,
        "reranking": rerank_choice,
        "rows": rows,
    }
    run.update_metrics("quality", result)
    io.save_npz(run.codes_dir / "quality_ap.npz", **per_query)
    best_row = max(rows, key=lambda r: r["val_mAP"])
    console.print(
        f"chosen on the class-disjoint classes: {best_row['representation']} + {best_row['reranking']}: "
        f"held-out mAP {best_row['mAP']:.4f}"
    )
    return result
