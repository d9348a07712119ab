"""The run folder: the unit of reproducibility. Every artefact of a run has one place here.

    RUN/config.json        the configuration, seeds included (plain data)
    RUN/data.json          the data it was made from: checksum, name, absolute location (pinned)
    RUN/history.json/.csv  per-epoch metrics of training
    RUN/metrics.json       evaluation results (classification, retrieval, PCA, ranking)
    RUN/checkpoints/       last.pt (resume) and best.pt (early stopping's choice)
    RUN/codes/             extracted neural codes
    RUN/figures/           PNGs
    RUN/report.md/.html    the report, built only from the JSON above
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuralcodes import io
from neuralcodes.config import RunConfig


class DataMismatchError(ValueError):
    """A command pointed a run at data other than the data the run was made from."""


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

    @property
    def data_path(self) -> Path:
        return self.root / "data.json"

    def pin_data(self, name: str, checksum: str, location: str) -> None:
        """Record the run's data the first time; afterwards refuse any other data (by checksum).

        A run folder's numbers are only meaningful with the data they came from: evaluating or
        resuming on a different collection that happens to sit at the same path must fail loudly.
        """
        record = {"name": name, "checksum": checksum, "location": location}
        if self.data_path.exists():
            pinned = io.read_json(self.data_path)
            if pinned["checksum"] != checksum:
                raise DataMismatchError(
                    f"{self.root} was made from data {pinned['name']!r} (sha256 {pinned['checksum'][:16]}..., at "
                    f"{pinned['location']}), but {location} holds other data (sha256 {checksum[:16]}...). "
                    f"Point --data at the original data, or start a new run folder for this data."
                )
            if pinned["location"] != location:  # the same data, moved: remember where it is now
                io.write_json(self.data_path, {**pinned, "location": location})
            return
        self.root.mkdir(parents=True, exist_ok=True)
        io.write_json(self.data_path, record)

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

    def write_config(self, config: RunConfig) -> None:
        """Write config.json once; a resumed run must bring the configuration it started with."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            old = type(config).from_dict(self.config())
            if old != config:
                changed = sorted(k for k, v in old.to_dict().items() if k != "kind" and getattr(config, k) != v)
                raise ValueError(
                    f"{self.config_path} holds a different configuration (differs in: {', '.join(changed)}); "
                    "resume with the same options or choose a new run folder"
                )
            return
        io.write_json(self.config_path, config.to_dict())
