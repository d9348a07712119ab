"""Report section of the quality study (`neuralcodes quality RUN`): every pipeline chosen on the
class-disjoint validation classes, scored once on the held-out classes."""

from __future__ import annotations

from typing import Any

from neuralcodes.report.document import table


def _interval(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    return f"{d['mean_difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _pipeline(row: dict[str, Any]) -> str:
    step = row["reranking"]
    return row["representation"] + ("" if step == "none" else f" + {step}")


def quality_section(metrics: dict[str, Any]) -> str:
    q = metrics.get("quality")
    if not q:
        return ""
    rows = q["rows"]
    best = max(rows, key=lambda r: r["val_mAP"])
    out = [
        "## Quality study: pipelines chosen on classes the network never saw\n",
        f"Every choice (layer; whitening dimension, power and shrinkage, fitted on in-domain training "
        f"codes; each re-ranking step's parameters) was made on the leave-one-out mAP of "
        f"{q['n_val_queries']:,} images of {len(q['val_classes'])} class-disjoint validation classes "
        f"(set aside from training). The {q['n_queries']:,} images of the held-out classes were read "
        "once, for the table below. No network here saw the held-out classes; *database* marks the "
        "re-ranking steps that read the unlabelled database's own structure (neighbours of "
        "neighbours), beyond each query's own results.\n",
        f"**Chosen on validation: {_pipeline(best)}**, held-out mAP {best['mAP']:.4f} "
        f"({_interval(best.get('vs_L7'))} against plain L7, paired bootstrap, 95%).\n",
    ]
    header = ["pipeline", "database", "dim", "val mAP", "mAP", "mAP@R", "P@1", "P@10"]
    header += ["ms/query", "vs L7 [95%]", "vs before its step [95%]"]
    body = [
        [
            _pipeline(r),
            "yes" if r.get("uses_database") else "",
            r["dim"],
            r["val_mAP"],
            r["mAP"],
            r.get("mAP@R"),
            r.get("P@1"),
            r.get("P@10"),
            f"{r['ms_per_query']:.2f}",
            _interval(r.get("vs_L7")),
            _interval(r.get("vs_before_step")),
        ]
        for r in rows
    ]
    out.append(table(header, body))
    chosen = {k: v for k, v in q["chosen"].items() if v is not None}
    if chosen:
        out.append(
            "Whitening chosen per layer: "
            + "; ".join(f"{k}: {v}" for k, v in chosen.items())
            + ".\n"
        )
    refused = []
    for layer, tried in q.get("validation", {}).items():
        scored = [t for t in tried[1:] if "val_mAP" in t]
        if q["chosen"].get(layer + "+whitened") is None and scored:
            top = max(scored, key=lambda t: t["val_mAP"])
            refused.append(
                f"{layer}: best {top['whitening']} {top['val_mAP']:.4f} against plain "
                f"{tried[0]['val_mAP']:.4f}"
            )
    if refused:
        out.append(
            "No whitening beat the plain codes on validation, so none is in the table: "
            + "; ".join(refused)
            + ".\n"
        )
    steps = q.get("reranking", {})
    if steps:
        out.append(
            "Re-ranking parameters chosen on validation: "
            + "; ".join(f"{m} {c['params']} (val mAP {c['val_mAP']:.4f})" for m, c in steps.items())
            + ".\n"
        )
    return "\n".join(out)
