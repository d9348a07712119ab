"""Results worth committing, out of a run folder: the report, its figures downscaled, and the JSON it was built from.

A run folder holds checkpoints and codes (hundreds of MB) that never belong in a repository;
``publish`` copies only what a reader needs (``neuralcodes report RUN --publish docs/results/NAME``),
keeps the copy under a size budget by shrinking the figures, and adds to ``metrics.json`` what the
run's own metrics leave implicit: the time of every epoch and the machine that measured them.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from neuralcodes import io
from neuralcodes.device import describe_machine
from neuralcodes.report import build_report
from neuralcodes.report.tuned_codes import write_comparison_report
from neuralcodes.runs import Run

COPIED = ("config.json", "split.json", "history.csv", "data.json", "study.json")
MIN_FIGURE_SIDE = 320  # below this a results grid is no longer readable: fail instead


def epoch_times(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch wall time and rate, and their total, from the run's history."""
    epochs = [
        {"epoch": h["epoch"], "seconds": h["seconds"], "images_per_s": h["images_per_s"]}
        for h in history
        if "seconds" in h
    ]
    return {"epochs": epochs, "total_hours": sum(e["seconds"] for e in epochs) / 3600}


def _figures(src: Path, dest: Path, max_side: int) -> None:
    if dest.exists():
        shutil.rmtree(dest)  # figures of an earlier publication at another size must not linger
    for png in sorted(src.rglob("*.png")):
        target = dest / png.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(png) as image:
            image.load()
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.LANCZOS)
            with io.atomic_path(target) as tmp:
                image.save(tmp, format="PNG", optimize=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def publish(
    run: Run | str | Path, dest: str | Path, max_side: int = 1200, budget_mb: float = 5.0
) -> Path:
    """Rewrite the run's report, then copy report, figures (longest side at most ``max_side`` px, smaller
    if the folder would exceed ``budget_mb``) and result files into ``dest``; return ``dest``."""
    run = run if isinstance(run, Run) else Run(run)
    dest = Path(dest)
    if dest.resolve() == run.root.resolve() or run.root.resolve() in dest.resolve().parents:
        raise ValueError(f"--publish {dest}: choose a folder outside the run folder {run.root}")
    _check_limits(max_side, budget_mb)
    md, html = build_report(run)  # refuses, saying why, a run with nothing to report yet
    dest.mkdir(parents=True, exist_ok=True)
    for path in (md, html, *(run.root / name for name in COPIED)):
        if path.exists():
            io.write_bytes(dest / path.name, path.read_bytes())

    metrics = run.metrics()
    recorded = metrics.get("training", {}).get("machine")
    metrics["timing"] = {
        **epoch_times(run.history()),
        "machine": recorded or describe_machine(),
        # A run trained by older code did not record its machine: say the figure is the publisher's.
        "machine_recorded": "by the training"
        if recorded
        else "at publication (the run did not record it)",
    }
    metrics["published"] = {
        "from": str(run.root),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    io.write_json(dest / "metrics.json", metrics)

    return _figures_within_budget(run.figures, dest, max_side, budget_mb)


def publish_comparison(
    folder: str | Path,
    dest: str | Path,
    tuned_runs: tuple[str | Path, ...] = (),
    max_side: int = 1200,
    budget_mb: float = 5.0,
) -> Path:
    """The same for a ``neuralcodes tuned compare`` folder: its report rewritten by today's code, the comparison
    and per-query AP it was built from, each fine-tuning run's config / history / metrics, figures in budget."""
    folder, dest = Path(folder), Path(dest)
    if dest.resolve() == folder.resolve() or folder.resolve() in dest.resolve().parents:
        raise ValueError(
            f"--publish {dest}: choose a folder outside the comparison folder {folder}"
        )
    _check_limits(max_side, budget_mb)
    md, html = write_comparison_report(
        folder, tuned_runs
    )  # refuses a folder without comparison.json
    dest.mkdir(parents=True, exist_ok=True)
    for path in (md, html, folder / "comparison.json", folder / "per_query_ap.npz"):
        if path.exists():
            io.write_bytes(dest / path.name, path.read_bytes())
    for run in map(Run, tuned_runs):
        for name in ("config.json", "history.csv", "metrics.json"):
            if (run.root / name).exists():
                io.write_bytes(dest / "runs" / run.root.name / name, (run.root / name).read_bytes())
    io.write_json(
        dest / "published.json",
        {
            "from": str(folder),
            "tuned_runs": [str(t) for t in tuned_runs],
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": describe_machine(),
        },
    )
    return _figures_within_budget(folder / "figures", dest, max_side, budget_mb)


def _check_limits(max_side: int, budget_mb: float) -> None:
    """Before DEST is touched: a budget of 0 or less (or nan) otherwise fails after the copy, blaming the figures."""
    if max_side < MIN_FIGURE_SIDE:
        raise ValueError(f"--max-figure-side must be at least {MIN_FIGURE_SIDE} px, got {max_side}")
    if not 0 < budget_mb < float("inf"):
        raise ValueError(f"--budget-mb must be a positive number of MB, got {budget_mb:g}")


def _figures_within_budget(figures: Path, dest: Path, max_side: int, budget_mb: float) -> Path:
    side = max_side
    while True:
        _figures(figures, dest / "figures", side)
        size = _size(dest)
        if size <= budget_mb * 2**20:
            return dest
        if side * 3 // 4 < MIN_FIGURE_SIDE:
            raise ValueError(
                f"{dest} holds {size / 2**20:.1f} MB even with figures at {side} px, over the {budget_mb:g} MB budget; "
                "raise --budget-mb or leave figures out of the run folder"
            )
        side = side * 3 // 4
