"""The embedded store's per-job change signals: each watch waits on its own job's changes only.

A condition shared by all had every frame of a running job wake every watch of every job, and
each then read its own job again (60 idle watches made a run 3x slower). Apart from the store,
whose writes only report each change here, once the transaction that made it has committed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _JobWait:
    """The condition the watches of one job wait on, and how many wait."""

    condition: threading.Condition
    waiters: int = 0


class JobChangeSignals:
    """The revision each job last reached in this process, and the watches waiting on it.

    Guarded by the store's `lock`: `changed` is called with it held, `wait` takes it. A job's
    condition exists only while someone waits on it.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._revisions: dict[str, int] = {}
        self._waits: dict[str, _JobWait] = {}

    def changed(self, job_id: str, revision: int | None) -> None:
        """`job_id` reached `revision` (None: deleted): its watches wake. The lock must be held."""
        # A deleted job is forgotten (so the map holds retained jobs only); its watchers are
        # woken like any others and find it gone.
        if revision is None:
            self._revisions.pop(job_id, None)
        else:
            self._revisions[job_id] = revision
        if (wait := self._waits.get(job_id)) is not None:
            wait.condition.notify_all()

    def wait(self, job_id: str, revision: int, timeout: float) -> None:
        """Block until `job_id` changes or `timeout` seconds pass; at once if it is no longer at `revision`."""
        with self._lock:
            if self._revisions.get(job_id, revision) != revision:
                return
            wait = self._waits.get(job_id)
            if wait is None:
                wait = self._waits[job_id] = _JobWait(threading.Condition(self._lock))
            wait.waiters += 1
            try:
                wait.condition.wait(timeout)
            finally:
                wait.waiters -= 1
                if wait.waiters == 0:
                    del self._waits[job_id]
