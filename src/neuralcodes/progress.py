"""Progress bars with rate and ETA for every long loop (rich, on stderr).

Set ``NEURALCODES_NO_PROGRESS=1`` to silence them (tests do).
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)


class ProgressBar:
    """A bar counting ``unit``s (images, queries, bytes) with rate, elapsed time, ETA and a status text."""

    def __init__(self, total: float | None, description: str = "", unit: str = "it") -> None:
        self.unit = unit
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            disable=os.environ.get("NEURALCODES_NO_PROGRESS") == "1",
        )
        self._task = self._progress.add_task(description, total=total, rate="", status="")

    def __enter__(self) -> "ProgressBar":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, n: float = 1, status: str | None = None) -> None:
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        fields: dict[str, str] = {}
        if speed:
            fields["rate"] = f"{speed:,.1f} {self.unit}/s"
        if status is not None:
            fields["status"] = status
        if fields:
            self._progress.update(self._task, **fields)


def track(iterable: Iterable[T], total: int | None = None, description: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressBar(total, description, unit) as bar:
        for item in iterable:
            yield item
            bar.advance()
