"""`RunAgainTurns`: the embedded workers' list of jobs their runs queued again, run one at a time.

A job whose run the server's passing trouble ended (a decoder killed at a memory limit,
threads short; see `JobExecutor`) is queued again in the store, and listed here with the time
its pause ends (`run_again_pause`). A worker looking for work takes the first job whose pause
is over, if no job taken from here runs: a memory limit met by two large videos killed both
decoders, and run again side by side they met it again until both jobs had used up their
attempts, where one after the other both succeed. No worker waits on the list meanwhile: the
pause and the turn are kept here, and the workers go on with the other jobs.
"""

from __future__ import annotations

import threading
import time


class RunAgainTurns:
    """Jobs waiting for their pause to end and their turn to run again; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[float, str]] = []  # (when its pause ends, by time.monotonic(); job id)
        self._taken = False

    def __len__(self) -> int:
        """Jobs listed, their turn not taken yet."""
        with self._lock:
            return len(self._waiting)

    def add(self, job_id: str, pause_seconds: float) -> None:
        with self._lock:
            self._waiting.append((time.monotonic() + pause_seconds, job_id))
            self._waiting.sort()

    def take(self) -> str | None:
        """The job whose turn it is, its pause over and no job taken from here running; the
        caller runs it, then calls `done`. None when there is none."""
        with self._lock:
            if self._taken or not self._waiting or self._waiting[0][0] > time.monotonic():
                return None
            self._taken = True
            return self._waiting.pop(0)[1]

    def done(self) -> None:
        """The job taken has run (or was not run after all): the next may go."""
        with self._lock:
            self._taken = False

    def seconds_to_next(self) -> float | None:
        """How long until a job's turn may come, as far as it can be told now (0: now); None when
        no job waits, or one taken runs (whose worker looks again once it is done)."""
        with self._lock:
            if self._taken or not self._waiting:
                return None
            return max(0.0, self._waiting[0][0] - time.monotonic())
