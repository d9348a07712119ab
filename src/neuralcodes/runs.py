"""The run folder: the unit of reproducibility. Every artefact of a run has one place here.

RUN/config.json        the configuration, seeds included (plain data, with the recipe's ``kind``)
RUN/data.json          the data it was made from: checksum, name, absolute location (pinned)
RUN/split.json         the split's parameters, sizes and fingerprint
RUN/progress.json      where a running command is: stage, epoch, batch, rate, ETA, pid (``neuralcodes status``)
RUN/history.json/.csv  per-epoch metrics of training
RUN/metrics.json       evaluation results (classification, retrieval, PCA, ranking)
RUN/checkpoints/       last.pt (resume: weights + optimiser + RNG) and best.pt (weights only)
RUN/codes/             extracted neural codes
RUN/figures/           PNGs
RUN/report.md/.html    the report, built only from the JSON above
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from neuralcodes import io
from neuralcodes.config import RunConfig


# Folders this process holds: a command nested in another (`run` -> `train`) re-enters its lock.
_HELD: dict[Path, int] = {}


class DataMismatchError(ValueError):
    """A command pointed a run at data other than the data the run was made from."""


# Options a resumed training run may change: a run still improving at its last epoch trains on.
TRAINS_ON = ("epochs",)


class RunBusyError(RuntimeError):
    """Another process holds the run folder."""


@dataclass(frozen=True)
class Run:
    """A run folder (``Run("runs/lib")``; nothing is created until a command writes): where each artefact lives."""

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
    def progress_path(self) -> Path:
        return self.root / "progress.json"

    @property
    def data_path(self) -> Path:
        return self.root / "data.json"

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

    # --- what the run is -------------------------------------------------------------------------

    def config(self, expect: str | None = None) -> dict[str, Any]:
        """config.json as plain data; ``expect`` names the command that makes such runs, for the message."""
        if not self.config_path.exists():
            if (
                self.root / "comparison.json"
            ).exists():  # the folder a user most often mistakes for a run
                raise FileNotFoundError(
                    f"{self.root} is a `neuralcodes tuned compare` folder, not a run folder: nothing trains there. "
                    f"Its results are in comparison.json and report.md; `neuralcodes tuned report {self.root} --tuned "
                    "RUN ...` rewrites the report."
                )
            made_by = f" `{expect}` makes such folders." if expect else ""
            raise FileNotFoundError(
                f"{self.root} is not a neuralcodes run folder (no config.json).{made_by} "
                "Pass the folder a training command created."
            )
        return _read_object(self.config_path)

    def write_config(self, config: RunConfig, may_change: tuple[str, ...] = ()) -> None:
        """Write config.json once; a resumed run must bring the configuration it started with, except the
        options in ``may_change`` (e.g. :data:`TRAINS_ON`: train a run that is still improving for longer), whose
        new values are written back and recorded under ``changed_on_resume``."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            stored = self.config()
            old = type(config).from_dict(stored, source=self.root)
            if old != config:
                changed = sorted(
                    k for k, v in old.to_dict().items() if k != "kind" and getattr(config, k) != v
                )
                if not set(changed) <= set(may_change):
                    raise ValueError(
                        f"{self.config_path} holds a different configuration (differs in: "
                        f"{', '.join(c for c in changed if c not in may_change)}); "
                        "resume with the same options or choose a new run folder"
                    )
                log = [
                    *stored.get("changed_on_resume", []),
                    *(
                        {"option": k, "from": getattr(old, k), "to": getattr(config, k)}
                        for k in changed
                    ),
                ]
                io.write_json(self.config_path, {**config.to_dict(), "changed_on_resume": log})
            return
        io.write_json(self.config_path, config.to_dict())

    def pin_data(
        self, name: str, checksum: str, location: str, skipped: list | None = None
    ) -> None:
        """Record the run's data the first time; afterwards refuse any other data (by checksum).

        A run folder's numbers are only meaningful with the data they came from: evaluating or
        resuming on a different collection that happens to sit at the same path must fail loudly.
        """
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
        # Files left out by --skip-corrupt belong to the run's record (its report lists them), not only to a log.
        record = {
            "name": name,
            "checksum": checksum,
            "location": location,
            "skipped": [list(s) for s in skipped or []],
        }
        io.write_json(self.data_path, record)

    def pinned_location(self) -> str | None:
        """Where the run's data was last seen (None for runs made before data was pinned)."""
        return io.read_json(self.data_path)["location"] if self.data_path.exists() else None

    # --- results ---------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        return _read_object(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, section: str, values: Any) -> None:
        """Set ``metrics[section] = values`` and write metrics.json atomically."""
        metrics = self.metrics()
        metrics[section] = values
        io.write_json(self.metrics_path, metrics)

    def history(self) -> list[dict[str, Any]]:
        return io.read_json(self.history_path) if self.history_path.exists() else []

    # --- a command at work on the folder ---------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        return _read_object(self.progress_path) if self.progress_path.exists() else {}

    def write_progress(self, stage: str, **fields: Any) -> None:
        """Say where the running command is (read by ``neuralcodes status`` from any other shell)."""
        io.write_json(
            self.progress_path,
            {
                "stage": stage,
                **fields,
                "updated": time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            },
        )

    def finish(self) -> None:
        """The command that owns the folder has ended normally: ``status`` stops suggesting ``--resume``.
        Figures the last stage recorded (epochs run, best epoch) are kept."""
        if (
            os.environ.get("RANK", "0") != "0"
        ):  # under torchrun the first process speaks for the run
            return
        kept = {
            k: v for k, v in self.progress().items() if k not in ("stage", "updated", "pid", "host")
        }
        self.write_progress("done", **kept)

    @contextlib.contextmanager
    def lock(self) -> Iterator["Run"]:
        """Hold the folder for one writing command; a second one is refused instead of interleaving writes.

        On entry, temporaries that an interrupted earlier command left behind (a killed checkpoint save
        leaves a 600 MB ``.last.pt.*.tmp``) are removed: with the lock held, no live writer owns them.
        """
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        self.check_writable()
        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            owner = self.progress().get("pid", "?")
            raise RunBusyError(
                f"{self.root} is in use by another neuralcodes process (pid {owner}); wait for it to finish, "
                f"or see `neuralcodes status {self.root}`"
            ) from None
        _HELD[key] = 1
        try:
            self.remove_stale_temporaries()
            yield self
        finally:
            del _HELD[key]
            if created:
                self._remove_if_nothing_made()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _remove_if_nothing_made(self) -> None:
        """A command that made the folder and then failed on its input leaves no empty run folder behind."""
        ours = {".lock", self.progress_path.name}
        if all(p.name in ours for p in self.root.iterdir()):
            for name in ours:
                (self.root / name).unlink(missing_ok=True)
            self.root.rmdir()

    def is_busy(self) -> bool:
        """True while some process holds the folder's lock (a command is working on it)."""
        lock_path = self.root / ".lock"
        if not lock_path.exists():
            return False
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete ``.*.tmp`` files of interrupted atomic writes anywhere in the folder; return them."""
        stale = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def check_writable(self) -> None:
        """Fail before any long work when results could not be saved here."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(
                f"cannot write to the run folder {self.root}: fix its permissions or choose another folder"
            )


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object: valid JSON of another shape (a list, a number) is as damaged as
    invalid JSON, and must be said so here rather than surface as an AttributeError in whatever reads it."""
    values = io.read_json(path)
    if not isinstance(values, dict):
        raise io.DamagedFileError(
            f"{path} is damaged (it holds a JSON {type(values).__name__}, not an object); restore it from a copy, "
            "or delete it so that the command that writes it can run again"
        )
    return values
