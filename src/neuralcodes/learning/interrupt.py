"""Stopping a long training cleanly: SIGINT / SIGTERM end the current batch, a checkpoint is written, then exit.

A training loop asks :class:`GracefulStop` after each batch whether to stop, and
:class:`CheckpointTimer` whether a periodic checkpoint is due. A second Ctrl-C stops at once
(the previous checkpoint stays intact: writes are atomic).
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class GracefulStop:
    """Context manager: while active, the first SIGINT/SIGTERM only sets :attr:`signum`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum

    def __enter__(self) -> "GracefulStop":
        # Signal handlers can only be set from the main thread; elsewhere (a test runner's worker
        # thread, a notebook kernel thread) training still runs, just without the graceful path.
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


class CheckpointTimer:
    """True every ``minutes`` of wall time (checkpoints inside long epochs)."""

    def __init__(self, minutes: float) -> None:
        if not minutes > 0:
            raise ValueError(f"the checkpoint interval must be positive (minutes), got {minutes}")
        self.seconds = minutes * 60.0
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.seconds

    def reset(self) -> None:
        self._last = time.monotonic()
