"""A job queue for tests of the job service alone."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from videodag_service.jobs import Job
from videodag_service.jobs.model import HandOver


class QueueThatRunsNothing:
    """A `JobQueue` that takes the hand-overs (kept in `dispatched`) and runs nothing: for tests of
    what the job service does before any worker would."""

    def __init__(self) -> None:
        self.dispatched: list[Job] = []

    def dispatch(self, job: Job) -> None:
        self.dispatched.append(job)

    def lost_hand_overs(self, hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        return ()

    def retry_stranded(self) -> None:
        return None

    def stop_taking(self) -> None:
        return None

    def wait_until_idle(self, timeout: float) -> bool:
        return True

    def depth(self) -> int:
        return 0

    def close(self) -> None:
        return None
