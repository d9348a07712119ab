"""The run report (Markdown + HTML, PNGs beside it), built only from the JSON the run wrote."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from neuralcodes import io
from neuralcodes.report.analysis import write_analysis
from neuralcodes.report.classification import classification_section, variants_section
from neuralcodes.report.document import table, to_html
from neuralcodes.report.quality import quality_section
from neuralcodes.report.retrieval import pca_section, retrieval_section
from neuralcodes.runs import Run


def _header(run: Run, config: dict) -> str:
    split = io.read_json(run.root / "split.json") if (run.root / "split.json").exists() else None
    lines = [f"# neuralcodes report: `{run.root.name}`\n"]
    lines.append(
        f"Data: {config.get('data') or 'the embedded sample (Tiny ImageNet, 30 classes)'}."
    )
    if split:
        lines.append(
            f" Course split (seed {split['seed']}): {split['sizes']['train']:,} train / {split['sizes']['val']:,} validation / "
            f"{split['sizes']['test']:,} test images of {split['n_in_domain']} in-domain classes; "
            f"{split['sizes']['ood']:,} images of {len(split['ood_classes'])} held-out classes for retrieval.\n"
        )
    keys = [
        k
        for k in (
            "seed",
            "batch_size",
            "lr",
            "epochs",
            "patience",
            "weight_decay",
            "augment",
            "batch_norm",
            "bf16",
        )
        if k in config
    ]
    lines.append("\n" + table(["setting", "value"], [[k, str(config[k])] for k in keys]))
    return "\n".join(lines)


def _ranking_sections(run: Run, ranking_runs: Sequence[Run]) -> list[str]:
    if not ranking_runs:
        return []
    from neuralcodes.report.deep_ranking import ranking_section

    sections = []
    for other in ranking_runs:
        # Copy the figures so the report stays self-contained when its folder is moved.
        target = run.figures / f"ranking-{other.root.name}"
        if other.figures.exists():
            shutil.copytree(other.figures, target, dirs_exist_ok=True)
        sections.append(ranking_section(other).replace("](figures/", f"](figures/{target.name}/"))
    return sections


# Stages a neural-codes report reads, and the command that produces each.
_STAGES = {
    "classification": "neuralcodes evaluate",
    "retrieval": "neuralcodes retrieve",
    "pca": "neuralcodes retrieve",
}


def _skipped(run: Run, shown: int = 50) -> str:
    skipped = io.read_json(run.data_path).get("skipped", []) if run.data_path.exists() else []
    if not skipped:
        return ""
    lines = [
        f"## Skipped files\n\n{len(skipped):,} file(s) of the data could not be read and were left out (--skip-corrupt):\n"
    ]
    lines += [f"- `{path}`: {reason}" for path, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"- ... and {len(skipped) - shown:,} more (all of them in `data.json`)")
    return "\n".join(lines) + "\n"


def _missing(run: Run, metrics: dict) -> str:
    todo = {cmd for name, cmd in _STAGES.items() if name not in metrics}
    if not todo:
        return ""
    return (
        "## Not measured yet\n\n"
        + "\n".join(f"- run `{cmd} {run.root}`" for cmd in sorted(todo))
        + "\n"
    )


def build_report(
    run: Run | str | Path, ranking_runs: Sequence[Run | str | Path] = ()
) -> tuple[Path, Path]:
    """Write RUN/report.md and RUN/report.html; return their paths."""
    run = run if isinstance(run, Run) else Run(run)
    config = run.config()
    metrics = run.metrics()
    ranking = [r if isinstance(r, Run) else Run(r) for r in ranking_runs]
    kind = config.get("kind")
    if kind in ("deep_ranking", "rank"):  # a `neuralcodes rank train` run
        from neuralcodes.report.deep_ranking import ranking_section

        sections = [f"# neuralcodes report: `{run.root.name}`\n", ranking_section(run)]
    elif kind in ("neural_codes", "classify"):
        if "training" not in metrics and not ranking:
            raise ValueError(
                f"{run.root} has no results to report yet: its training has not finished "
                f"(`neuralcodes status {run.root}` says where it stands; continue it with --resume)"
            )
        sections = [
            _header(run, config),
            classification_section(metrics, run.history()),
            variants_section(metrics),
            retrieval_section(metrics),
            pca_section(metrics),
            quality_section(metrics),
            *_ranking_sections(run, ranking),
            write_analysis(metrics),
            _skipped(run),
            _missing(run, metrics),
        ]
    else:
        raise ValueError(
            f"{run.config_path} names an unknown run kind {kind!r}; cannot write its report"
        )
    text = "\n".join(s for s in sections if s)
    md_path, html_path = run.root / "report.md", run.root / "report.html"
    io.write_text(md_path, text)
    io.write_text(html_path, to_html(text, f"neuralcodes report: {run.root.name}"))
    return md_path, html_path
