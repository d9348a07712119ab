"""Progress bars with rate and ETA for every long loop (rich, on stderr).

Set ``NEURALCODES_NO_PROGRESS=1`` to silence them (tests do).
"""

from __future__ import annotations

import os
import time
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

# soft_wrap: a long line stays one line (a terminal wraps it itself; a log must not get a newline inside a figure).
console = Console(stderr=True, soft_wrap=True)


class ProgressBar:
    """A bar counting ``unit``s (images, queries, bytes) with rate, elapsed time, ETA and a status text."""

    LOG_EVERY_S = (
        30.0  # without a terminal (nohup, CI logs) a plain line this often instead of a live bar
    )
    # Redrawn from advance() at most this often, never from a thread of its own: rich's refresh thread
    # (10 redraws a second) cost the training loop 8-35% on a busy 2-core machine (benchmarks/, bench.md).
    REDRAW_EVERY_S = 0.5

    def __init__(
        self, total: float | None, description: str = "", unit: str = "it", initial: float = 0
    ) -> None:
        """``initial``: units already done before this bar started (a resumed epoch): shown, not counted in the rate."""
        self.unit = unit
        self.total = total
        self.description = description
        self._initial = self._done = float(initial)
        self._start = self._last_log = time.monotonic()
        silenced = os.environ.get("NEURALCODES_NO_PROGRESS") == "1"
        # Without a terminal a bar's frames (box characters cut at 80 columns) only clutter a log: plain lines instead.
        self._log_lines = not console.is_terminal and not silenced
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
            disable=silenced or self._log_lines,
            auto_refresh=False,
        )
        self._last_draw = 0.0
        self._task = self._progress.add_task(
            description, total=total, completed=initial, rate="", status=""
        )

    def __enter__(self) -> "ProgressBar":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._log_lines and self._done > self._initial:
            self._log(None)  # the closing line: where it ended, and the mean rate
        self._progress.refresh()  # the final state, whatever the redraw interval
        self._progress.stop()

    def advance(self, n: float = 1, status: str | None = None) -> None:
        self._progress.advance(self._task, n)
        self._done += n
        if self._log_lines and time.monotonic() - self._last_log >= self.LOG_EVERY_S:
            self._log(status)
        speed = self._progress.tasks[0].speed
        fields: dict[str, str] = {}
        if speed:
            fields["rate"] = f"{speed:,.1f} {self.unit}/s"
        if status is not None:
            fields["status"] = status
        if fields:
            self._progress.update(self._task, **fields)
        now = time.monotonic()
        if now - self._last_draw >= self.REDRAW_EVERY_S:
            self._last_draw = now
            self._progress.refresh()

    def _log(self, status: str | None) -> None:
        now = time.monotonic()
        self._last_log = now
        rate = (self._done - self._initial) / max(now - self._start, 1e-9)
        line = f"{self.description}: {self._done:,.0f}"
        if self.total:
            eta = (self.total - self._done) / rate if rate > 0 else float("inf")
            line += f"/{self.total:,.0f} ({self._done / self.total:.0%}), eta {eta / 60:.1f} min"
        line += f", {rate:,.1f} {self.unit}/s" + (f", {status}" if status else "")
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def track(
    iterable: Iterable[T], total: int | None = None, description: str = "", unit: str = "it"
) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressBar(total, description, unit) as bar:
        for item in iterable:
            yield item
            bar.advance()
