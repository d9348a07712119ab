"""Wall and CPU time of one timed block (CPU time shows how much of the wall time the process got)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self


class Clock:
    """``with Clock() as c: ...`` then ``c.seconds`` (wall) and ``c.cpu_seconds`` (all threads of this process)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __enter__(self) -> Self:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu

    def figures(self, images: int) -> dict[str, float]:
        return {
            "images_per_s": images / self.seconds,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }
