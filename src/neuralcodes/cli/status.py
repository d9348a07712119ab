"""`neuralcodes status RUN` (where a run stands, from any shell) and `neuralcodes clean RUN`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from neuralcodes.progress import console
from neuralcodes.runs import Run


# The metrics.json sections that mark a finished stage, in the order the recipes reach them.
STAGES = (
    "training",
    "tuned",
    "classification",
    "retrieval",
    "pca",
    "variants",
    "ranking",
    "ranking_mining",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="where a run stands: stage, epoch, batch, rate, ETA, and whether it is running",
    )
    p.add_argument("run")
    p.set_defaults(func=status_command)

    p = sub.add_parser(
        "clean",
        help="free disk space of a finished run: delete checkpoints/last.pt and stale temporaries",
    )
    p.add_argument("run")
    p.set_defaults(func=clean_command)


def describe(run: Run) -> list[str]:
    """Plain lines saying where ``run`` (and its variant and seed runs) stand."""
    config = run.config()
    lines = [
        f"{run.root}: a {config.get('kind', '?')} run, {'running now' if run.is_busy() else 'not running'}"
    ]
    progress = run.progress()
    if progress:
        age = time.time() - progress.get("updated", 0)
        where = progress["stage"]
        if "batch" in progress:
            where += f", epoch {progress['epoch']}/{progress['epochs']}, batch {progress['batch']}/{progress['batches']}"
            rate, eta = progress.get("images_per_s"), progress.get("epoch_eta_s")
            if rate:
                where += f", {rate:,.0f} images/s, epoch ends in {eta / 60:.1f} min"
        lines.append(f"  stage: {where} (as of {_ago(age)}, pid {progress.get('pid')})")
    history = run.history()
    if history:
        last = history[-1]
        # Whatever validation figures this recipe records (loss and accuracy, or a mAP).
        figures = [
            f"{k.replace('_', ' ')} {v:.4f}"
            for k, v in last.items()
            if k.startswith("val") and isinstance(v, float)
        ]
        lines.append(
            f"  epochs done: {len(history)}; last: {', '.join(figures) or 'no validation figures'}, "
            f"{last.get('seconds', 0) / 60:.1f} min"
        )
    done = [name for name in STAGES if name in run.metrics()]
    lines.append(f"  finished stages: {', '.join(done) if done else 'none yet'}")
    if run.last_checkpoint.exists():
        lines.append(
            f"  checkpoint: {run.last_checkpoint} ({run.last_checkpoint.stat().st_size / 2**20:,.0f} MiB)"
        )
    for child in sorted(
        [*run.root.glob("variants/*/config.json"), *run.root.glob("seeds/*/config.json")]
    ):
        lines += ["  " + line for line in describe(Run(child.parent))]
    return lines


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def status_command(args: argparse.Namespace) -> None:
    run = Run(args.run)
    for line in describe(run):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not run.is_busy() and "done" != run.progress().get("stage", "done"):
        console.print("continue it with the command that started it plus --resume", markup=False)


def clean_command(args: argparse.Namespace) -> None:
    run = Run(args.run)
    run.config()
    with run.lock():
        # Only a finished training's last.pt goes: an unfinished one is what --resume continues from.
        runs = (run, *(Run(c.parent) for c in run.root.glob("*/*/config.json")))
        last = [
            r.last_checkpoint
            for r in runs
            if "training" in r.metrics() and r.last_checkpoint.exists()
        ]
        freed = sum(p.stat().st_size for p in last)
        for path in last:
            path.unlink()
        removed: list[Path] = [*last, *run.remove_stale_temporaries()]
    listing = (
        "nothing to remove" if not removed else "removed " + ", ".join(str(p) for p in removed)
    )
    console.print(
        f"{listing} ({freed / 2**20:,.0f} MiB of checkpoints)", markup=False, soft_wrap=True
    )
