"""The benchmark's table (terminal and Markdown) and its goal checks, from the JSON it writes."""

from __future__ import annotations

from typing import Any

TRAIN_GOAL = 1.3  # ours / Keras training throughput on the default CPU path
INFER_GOAL = 1.0


def _row(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["key"] == key and r["images_per_s"]), None)


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """ours / Keras for each of our rows, from the same run."""
    out: dict[str, float | None] = {}
    for section in ("train", "infer"):
        rows = result.get(section, [])
        keras = _row(rows, "keras")
        for r in rows:
            if r["key"] != "keras":
                out[f"{section}.{r['key']}"] = (
                    r["images_per_s"] / keras["images_per_s"]
                    if keras and r["images_per_s"]
                    else None
                )
    return out


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's CPU goals against what this run measured (None where a side was not measured)."""
    r = ratios(result)
    checks = {}
    for name, key, goal in (
        ("training, bare step", "train.ours_step_bf16", TRAIN_GOAL),
        ("training, real loop", "train.ours_loop", TRAIN_GOAL),
        ("inference (codes)", "infer.ours_bf16", INFER_GOAL),
    ):
        value = r.get(key)
        checks[name] = {
            "ratio": value,
            "goal": goal,
            "met": None if value is None else value >= goal,
        }
    return checks


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict[str, Any], markdown: bool = False) -> str:
    """The whole table: throughput rows with their ratio to Keras, then the mAP rows, then the goals."""
    r = ratios(result)
    lines: list[str] = []

    def emit(cells: list[str], widths: list[int]) -> None:
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(
                "".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths, strict=True))
                )
            )

    def header(cells: list[str], widths: list[int]) -> None:
        emit(cells, widths)
        if markdown:
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(cells) - 1)) + "|")

    widths = [66, 12, 10, 14]
    for section, title in (
        ("train", "training, forward + backward + Adam(amsgrad), batch {b}"),
        ("infer", "inference: L2-normalised L5/L6/L7 codes, batch {ib}"),
    ):
        rows = result.get(section)
        if not rows:
            continue
        s = result["settings"]
        header(
            [
                title.format(b=s["batch"], ib=s["infer_batch"]),
                "images/s",
                "vs Keras",
                "images/CPU-s",
            ],
            widths,
        )
        for row in rows:
            if row["skipped"]:
                emit([row["label"], "skipped", "-", "-"], widths)
                continue
            ratio = 1.0 if row["key"] == "keras" else r.get(f"{section}.{row['key']}")
            emit(
                [
                    row["label"],
                    _fmt(row["images_per_s"], ".1f"),
                    _fmt(ratio, ".2f") + ("x" if ratio else ""),
                    _fmt(row["images_per_cpu_s"], ".1f"),
                ],
                widths,
            )
        lines.append("")
    if result.get("map"):
        s = result["settings"]
        header(
            [
                f"leave-one-out mAP, {s['map_n']:,} codes x {s['map_dim']:,} dims",
                "seconds",
                "vs ref.",
                "peak MiB",
                "mAP",
            ],
            [66, 12, 10, 14, 12],
        )
        for m in result["map"]:
            emit(
                [
                    m["label"],
                    f"{m['seconds']:.2f}",
                    f"{m['speedup_vs_reference']:.1f}x",
                    _fmt(m["peak_mib"], ".0f"),
                    _fmt(m["mAP"], ".6f"),
                ],
                [66, 12, 10, 14, 12],
            )
        lines.append("")
    for name, check in result.get("goals", {}).items():
        if check["ratio"] is None:
            lines.append(
                f"goal {name}: >= {check['goal']:.1f}x Keras: not measured (Keras column skipped or row not run)"
            )
        else:
            lines.append(
                f"goal {name}: >= {check['goal']:.1f}x Keras: {check['ratio']:.2f}x, {'met' if check['met'] else 'MISSED'}"
            )
    if markdown:
        lines = [line + "  " if line.startswith("goal") else line for line in lines]
    return "\n".join(lines).rstrip() + "\n"


def preamble(result: dict[str, Any]) -> str:
    m, load = result["machine"], result["load_average"]
    versions = f"torch {m['torch']}" + (
        f", TensorFlow {m['tensorflow']}, Keras {m['keras']}" if m.get("keras") else ""
    )
    text = (
        f"{m['cpu']}, {m['cores']} cores, {versions}; threads {result['settings']['threads'] or 'default'}.\n"
        f"Load average (1 min) {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end: "
        "other processes shared the cores when it is above 0; compare ratios, measured side by side, "
        "rather than absolute figures.\n"
    )
    if result.get("keras_skipped"):
        text += f"Keras column skipped: {result['keras_skipped']}\n"
    return text
