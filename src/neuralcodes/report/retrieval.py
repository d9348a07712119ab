"""Report sections on neural-code retrieval and PCA compression."""

from __future__ import annotations

from typing import Any

from neuralcodes.report.document import figure, table

_TIES = {
    "index": "Results tied in distance are ranked by database index, so every number is deterministic "
    "(scikit-learn's `average_precision_score` would instead give all results of a tie one precision).",
    "average": "AP gives all results tied in distance one precision, as scikit-learn's `average_precision_score` "
    "does; the other metrics rank tied results by database index.",
}


def retrieval_section(metrics: dict[str, Any]) -> str:
    r = metrics.get("retrieval")
    if not r:
        return ""
    layers = r["layers"]
    ks = [k for k in next(iter(layers.values())) if k.startswith("P@")]
    out = [
        "## Retrieval with neural codes\n",
        f"Each of the {r['n_queries']:,} images of the {r['n_classes']} held-out classes queries the other "
        f"{r['n_queries'] - 1:,} (the query is excluded by its index); codes are L2-normalised, ranked by "
        f"Euclidean distance; AP is non-interpolated over the full ranking. {_TIES[r.get('ties', 'index')]}\n",
    ]
    rows = [
        [layer, v["dim"], v["mAP"], v.get("mAP_se"), v["mAP@R"], *(v[k] for k in ks)]
        for layer, v in layers.items()
    ]
    out.append(table(["layer", "dimension", "mAP", "std. error", "mAP@R", *ks], rows))
    if r.get("paired"):
        out.append(_paired_table(r["paired"]))
    zero = {k: v for k, v in r.get("zero_codes", {}).items() if v}
    if zero:
        out.append(
            "All-zero codes (dead units; kept as zero vectors): "
            + ", ".join(f"{k}: {v}" for k, v in zero.items())
            + "\n"
        )
    out.append(figure("figures/map_per_layer.png", "mAP per layer"))
    out.append(
        figure(
            "figures/precision_recall.png",
            "Precision-recall per layer (interpolated, averaged over queries)",
        )
    )
    for layer in layers:
        out.append(
            figure(
                f"figures/results_{layer}.png",
                f"{layer}: the first 10 held-out queries and their 5 nearest images (green: same class, red: other)",
            )
        )
    return "\n".join(out)


def _paired_table(paired: list[dict[str, Any]]) -> str:
    confidence = paired[0]["confidence"]
    rows = [
        [
            f"{p['a']} - {p['b']}",
            p["mean_difference"],
            p["low"],
            p["high"],
            "yes" if p["low"] > 0 or p["high"] < 0 else "no",
        ]
        for p in paired
    ]
    return (
        f"Paired comparison of the layers on the same {paired[0]['n']:,} queries: the mean per-query AP "
        f"difference with its {confidence:.0%} bootstrap interval ({paired[0]['n_resamples']:,} resamples of the "
        "queries). A difference is resolved when the interval excludes 0.\n\n"
        + table(["layers", "mean AP difference", "interval low", "interval high", "resolved"], rows)
    )


def pca_section(metrics: dict[str, Any]) -> str:
    p = metrics.get("pca")
    if not p:
        return ""
    layers = p["layers"]
    dims = sorted({row["dim"] for rows in layers.values() for row in rows if row["pca"]})
    header = ["layer", *(str(d) for d in dims), "full (dim)"]
    rows = []
    for layer, layer_rows in layers.items():
        by_dim = {row["dim"]: row["mAP"] for row in layer_rows if row["pca"]}
        full = next(row for row in layer_rows if not row["pca"])
        rows.append([layer, *(by_dim.get(d) for d in dims), f"{full['mAP']:.4f} ({full['dim']})"])
    out = [
        "## PCA-compressed codes\n",
        f"PCA learned on the codes of {p['n_fit']:,} in-domain training images (never on the held-out set); "
        f"codes projected to d dimensions{' and whitened' if p.get('whiten') else ''}, then re-normalised. mAP:\n",
        table(header, rows),
        figure("figures/pca_map.png", "mAP against PCA dimension"),
    ]
    return "\n".join(out)
