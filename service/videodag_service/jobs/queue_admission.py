"""Room in the job queue for a submission, counted from before its upload until it is queued.

SubmitJob refuses a full queue before the upload, so that a refused video costs no disk. A
submission let in is no job yet while its video uploads (seconds; minutes for a large one),
and the queue's depth does not count it: submissions arriving together each saw the same room,
and a cap of 10 let 16 in. Those let in and still uploading count as waiting until each is
queued or has failed. Replicas of a Redis deployment each count only their own uploads: across
them the cap may still be passed by the uploads under way at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from videodag_service.errors import ErrorDetails, TooManyQueuedJobs
from videodag_service.wording import counted

QUEUE_FULL_RETRY_SECONDS = 30.0


class QueueAdmission:
    """Lets a submission in while fewer than `max_queued_jobs` wait for a worker (0: no cap);
    `depth` counts the queued ones."""

    def __init__(self, max_queued_jobs: int, depth: Callable[[], int]) -> None:
        self._max_queued_jobs = max_queued_jobs
        self._depth = depth
        self._lock = threading.Lock()
        self._uploading = 0

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Counted as waiting for the block's length: its upload, until its job is queued.
        TOO_MANY_QUEUED_JOBS, with a retry hint, when there is no room."""
        if not self._max_queued_jobs:
            yield
            return
        queued = self._depth()  # outside the lock: a store that stalls holds up its own caller only
        with self._lock:
            if queued + self._uploading >= self._max_queued_jobs:
                raise self._refusal(queued, self._uploading)
            self._uploading += 1
        try:
            yield
        finally:
            with self._lock:
                self._uploading -= 1

    def _refusal(self, queued: int, uploading: int) -> TooManyQueuedJobs:
        still = f" ({uploading} of them still uploading)" if uploading else ""
        return TooManyQueuedJobs(
            f"the server already holds {counted(queued + uploading, 'job', 'jobs')} waiting for a worker{still}, its "
            f"maximum of {self._max_queued_jobs}; retry later",
            ErrorDetails(metadata={"max_queued_jobs": str(self._max_queued_jobs)},
                         retry_after_seconds=QUEUE_FULL_RETRY_SECONDS),
        )
