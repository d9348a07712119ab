"""The run folder: the unit of reproducibility. Every artefact of a run has one place here.

    RUN/config.json        the configuration, seeds included (plain data)
    RUN/history.json/.csv  per-epoch metrics of training
    RUN/metrics.json       evaluation results (classification, retrieval, PCA, ranking)
    RUN/checkpoints/       last.pt (resume) and best.pt (early stopping's choice)
    RUN/codes/             extracted neural codes
    RUN/figures/           PNGs
    RUN/report.md/.html    the report, built only from the JSON above
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import io


@dataclass(frozen=True)
class Run:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def history_path(self) -> Path:
        return self.root / "history.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def codes_dir(self) -> Path:
        return self.root / "codes"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise FileNotFoundError(
                f"{self.root} is not a neuralcodes run folder (no config.json); "
                "pass the folder that `neuralcodes train` or `neuralcodes run` created"
            )
        return io.read_json(self.config_path)

    def metrics(self) -> dict[str, Any]:
        return io.read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, section: str, values: Any) -> None:
        """Set ``metrics[section] = values`` and write metrics.json atomically."""
        metrics = self.metrics()
        metrics[section] = values
        io.write_json(self.metrics_path, metrics)

    def history(self) -> list[dict[str, Any]]:
        return io.read_json(self.history_path) if self.history_path.exists() else []

    def write_config(self, config: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            old = io.read_json(self.config_path)
            if old != json.loads(json.dumps(config, default=io._json_default)):
                # A resumed run must use the configuration it started with.
                changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise ValueError(
                    f"{self.config_path} holds a different configuration (differs in: {', '.join(changed)}); "
                    "resume with the same options or choose a new run folder"
                )
            return
        io.write_json(self.config_path, config)
