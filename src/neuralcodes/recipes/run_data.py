"""The data of a run folder: loaded once, pinned by checksum, its split verified by fingerprint.

Every recipe command that reads images goes through here, so a run can never be resumed or
evaluated on other data than it was made from (a silent wrong answer), whichever directory the
command is started from.
"""

from __future__ import annotations

from pathlib import Path

from neuralcodes import io
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.sources import load_dataset
from neuralcodes.data.splits import Split
from neuralcodes.runs import DataMismatchError, Run


def load_run_data(
    run: Run,
    spec: str | None,
    skip_corrupt: bool = False,
    dataset: Dataset | None = None,
    pin: bool = True,
) -> Dataset:
    """Load ``spec`` (or take ``dataset``) and check it against the data ``run`` pinned.

    A run without pinned data is pinned to it now, unless ``pin=False`` (a new run pins its data only
    once the data has passed its checks, so a failed start does not tie the folder to bad data).
    """
    if dataset is None:
        pinned = run.pinned_location()
        if spec is not None and spec == pinned and "://" not in spec and not Path(spec).exists():
            raise FileNotFoundError(
                f"the data of {run.root} is no longer at {spec}: pass --data with its new place "
                "(it is verified against the run's checksum)"
            )
        dataset = load_dataset(spec, skip_corrupt=skip_corrupt)
    if pin or run.data_path.exists():
        run.pin_data(dataset.name, dataset.checksum, dataset.location, dataset.skipped)
    return dataset


def data_spec(run: Run, configured: str | None, override: str | None) -> str | None:
    """Which data to read for a later command: ``--data`` if given, else the run's own (where it was last seen)."""
    if override is not None:
        return override
    return run.pinned_location() or configured


def check_split(run: Run, split: Split) -> None:
    """Record ``split`` in RUN/split.json, or refuse a split that differs from the recorded one."""
    path = run.root / "split.json"
    if path.exists():
        recorded = io.read_json(path)
        if recorded.get("sha256") != split.fingerprint():
            raise DataMismatchError(
                f"{run.root}: the course split drawn now (sha256 {split.fingerprint()[:16]}...) differs from the one "
                f"the run recorded in {path} (sha256 {str(recorded.get('sha256'))[:16]}...): the data or the split "
                "options changed. Use the original data and options, or start a new run folder."
            )
        return
    io.write_json(path, split.to_json())
