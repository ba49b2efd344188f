"""`JobStore`: where job records and their results live, whatever the backend.

Two kinds of callers share a store. The service side (any server replica) creates, reads,
lists, cancels, deletes and watches jobs. The worker side claims a job for one attempt and
writes its progress, results and outcome under that claim (`RunClaim`); every worker-side
write is conditional on the job still being RUNNING under that very claim and returns False
otherwise. That single rule makes a cancel, a delete or a re-run elsewhere stop a worker at
its next frame, and keeps a stale worker (one thought lost that was not, or one whose claim
the store forgot and handed out again) from adding a result twice.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence

from videodag_service.errors import JobAlreadyFinished, JobNotFinished
from videodag_service.jobs.model import HandOver, Job, JobError, JobFrame, JobPage, JobState, JobSummary, RunClaim
from videodag_service.video import VideoInfo

LostHandOvers = Callable[[Sequence[HandOver]], Collection[HandOver]]
"""Of hand-overs made a while ago and claimed by no worker since, those the queue no longer
holds for a worker (`JobQueue.lost_hand_overs`)."""

MAX_ATTEMPTS_ERROR = (
    "the job's run vanished in attempt {attempts}, its last (the server or worker running it crashed or was "
    "killed), and the job was given up"
)
"""Earlier attempts may have vanished too, or failed for the server's passing trouble
(`JobStore.queue_next_attempt`)."""


class StoredResultsLost(Exception):
    """Raised by `JobStore.finish` for a success whose summary counts more frames than the store
    holds for its run: the store lost results it had taken (Redis restored to an earlier state,
    or a failover to a replica that lagged, with the claim kept). The job stays RUNNING under
    the run, for the run to release: it runs again from the start rather than end with holes."""


def check_cancellable(job_id: str, state: JobState) -> None:
    """Raise JobAlreadyFinished for a job that SUCCEEDED or FAILED: its outcome stands. A
    CANCELLED one may be cancelled again, which changes nothing."""
    if state in (JobState.SUCCEEDED, JobState.FAILED):
        raise JobAlreadyFinished(job_id, state.value)


def check_deletable(job_id: str, state: JobState) -> None:
    """Raise JobNotFinished for a job still QUEUED or RUNNING: a worker may be using its video."""
    if not state.is_finished:
        raise JobNotFinished(job_id, state.value)


class JobStore(ABC):
    """Job records, their per-frame results, and the transitions between states."""

    outage_errors: tuple[type[Exception], ...] = ()
    """What the store raises when its backend cannot be reached (a network store's
    connection errors), so callers can tell an outage from a bug."""

    def clock(self) -> float:
        """Now, in seconds since the epoch, as every process sharing the store counts time: leases,
        retention ends, watch marks and hand-over times written by one are judged by another.
        A store on this machine goes by its wall clock."""
        return time.time()

    @property
    def outage_patience_seconds(self) -> float:
        """How long a running job waits out an outage (see `outage_errors`) before its run stops:
        for a store with leases, less than a lease, so no other worker takes the job over
        meanwhile. A store on this machine has no outage to wait out."""
        return 0.0

    def kept_in_place(self) -> str | None:
        """What has gone wrong with the store's files since it opened, if anything (a database
        removed from under the server); checked by maintenance. Stores without files: None."""
        return None

    def check_writable(self) -> None:  # noqa: B027 - a store on this machine has nothing to check
        """Raise one of `outage_errors` when the store cannot take a write now (out of reach, or a
        read-only replica during a failover). A store on this machine always can."""

    def mark_watched(self, job_ids: Collection[str], until: float) -> None:  # noqa: B027 - most stores need not
        """Keep these jobs past their retention until `until`, for every server sharing the store:
        a watch connected when its job ends must get the final state, also when another replica
        removes finished jobs. A store only one server uses has nothing to do: its watches' jobs
        are passed to `purge_expired` as `keep`."""

    # --- service side ---------------------------------------------------------------------

    @abstractmethod
    def create(self, job: Job) -> Job:
        """Store a new QUEUED job and return it.

        When another job already holds `job.idempotency_key`, nothing is stored and that job
        is returned instead (the caller compares ids to know which happened). One of
        `outage_errors` leaves it unknown whether the job was stored: a command whose reply
        the outage took may still reach the store once it is back.
        """

    @abstractmethod
    def find_by_idempotency_key(self, key: str) -> Job | None: ...

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job as it is now; JobNotFound when there is none."""

    @abstractmethod
    def list_jobs(self, page_size: int, after_job_id: str | None, states: Sequence[JobState]) -> JobPage:
        """Jobs newest first, starting after `after_job_id`, only `states` (all when empty)."""

    @abstractmethod
    def cancel(self, job_id: str, now: float, expire_at: float) -> tuple[Job, JobState]:
        """Make a QUEUED or RUNNING job CANCELLED; returns the job and the state it had.

        Cancelling a CANCELLED job changes nothing; a SUCCEEDED or FAILED one raises
        FailedPrecondition; an unknown one JobNotFound.
        """

    @abstractmethod
    def delete(self, job_id: str) -> Job:
        """Remove a finished job and its results; returns what was removed.

        A QUEUED or RUNNING job raises FailedPrecondition; an unknown one JobNotFound.
        """

    @abstractmethod
    def frames_after(self, job_id: str, after_frame_index: int | None, limit: int) -> list[JobFrame]:
        """Up to `limit` stored results with a frame index above `after_frame_index`, in order."""

    @abstractmethod
    def wait_for_change(self, job_id: str, revision: int, after_frame_index: int | None, timeout: float) -> None:
        """Block until the job may have changed since `revision`, or a frame after
        `after_frame_index` may be stored, or `timeout` seconds passed. Waking early is allowed."""

    # --- worker side ----------------------------------------------------------------------

    @abstractmethod
    def claim(self, job_id: str, attempt: int, now: float) -> Job | None:
        """QUEUED in `attempt` -> RUNNING, discarding any partial results; None if not claimable.

        The job returned is running under the claim `RunClaim.of(job)`, which the run's every
        write names. A claim repeated with the same `now` (its reply lost to an outage) finds the job RUNNING
        in that attempt since `now`, its own doing, and returns it as the first would have."""

    @abstractmethod
    def record_video(self, run: RunClaim, info: VideoInfo, frames_total: int) -> bool: ...

    @abstractmethod
    def append_frame(self, run: RunClaim, frame: JobFrame) -> bool:
        """Store one result and count it; False when `run` is no longer the job's current run.

        The frame stored last, written again (a write repeated because an outage lost its reply),
        is neither stored nor counted twice: the call returns as the first did."""

    @abstractmethod
    def release(self, run: RunClaim, now: float) -> bool:
        """RUNNING under `run` -> QUEUED in the same attempt, its partial results discarded.

        For a run its own process stopped cleanly (a server shutting down): the job runs again
        from the start, and the stop costs it none of its `max_attempts`, which are there for
        runs that vanished (a crash, a lost worker) and could do so every time. Only the worker
        that ran the attempt may call it, once it wrote its last result. False when the job was
        not running under that claim (cancelled meanwhile, or taken over)."""

    @abstractmethod
    def queue_next_attempt(self, run: RunClaim, now: float) -> bool:
        """RUNNING under `run` -> QUEUED in the next attempt, its partial results discarded.

        For a run that failed for the server's own passing trouble (a decoder killed, threads or
        memory short): the job runs again from the start, as after a crash, and the failure
        costs it one of its `max_attempts`, as a crash does; the caller records the failure
        itself (`finish`) once none is left. The job is due for a hand-over to a worker, as a
        released one is. False when the job was not running under that claim."""

    @abstractmethod
    def finish(
        self,
        run: RunClaim,
        now: float,
        expire_at: float,
        summary: JobSummary | None = None,
        error: JobError | None = None,
    ) -> bool:
        """RUNNING under `run` -> SUCCEEDED (with `summary`) or FAILED (with `error`); a success
        with fewer frames stored than its summary's `frames_processed` raises StoredResultsLost."""

    # --- maintenance ----------------------------------------------------------------------

    @abstractmethod
    def recover(
        self, now: float, max_attempts: int, expire_at: float, lost_hand_overs: LostHandOvers | None = None
    ) -> list[Job]:
        """Jobs that must be handed to a worker again: interrupted runs put back to QUEUED with
        their attempt raised and their partial results discarded (or FAILED, to expire at
        `expire_at`, once `max_attempts` runs were interrupted), and queued jobs whose hand-over
        to a worker was lost. Each returned job is QUEUED in its current attempt, or FAILED by
        this call (given up: its video is the caller's to delete, as for any finished job), or
        CANCELLED while it ran, once its run's lease has ended: a run that stops deletes its
        video, one whose worker vanished cannot, so the caller deletes it (if still there).

        A store whose jobs go to workers in other processes asks `lost_hand_overs` which of its
        unclaimed hand-overs the queue lost (a worker killed, or the store out of reach, between
        taking the job and claiming it). Such a job counts as a run that vanished: QUEUED again
        in its next attempt, or FAILED once it had `max_attempts`, so a job that kills every
        worker taking it ends instead of looping."""

    @abstractmethod
    def purge_expired(self, now: float, keep: Collection[str] = ()) -> list[Job]:
        """Delete finished jobs whose retention ended, but those in `keep` (being watched, and
        purged once they are not); returns them (their files are the caller's)."""

    def erase_deleted_data(self) -> None:  # noqa: B027 - a store that keeps no copies has nothing to do
        """Erase the copies of deleted jobs' data the store still keeps in its files, as far as it
        can now, without raising: each maintenance pass calls it again for what it could not.
        A store whose copies its server manages (Redis's append-only file) has nothing to do."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and locks."""

    def close_and_discard(self, also: Callable[[], None]) -> None:
        """Close, and remove what the store keeps on disk if it holds no job, calling `also`
        first to remove what goes with it: what a failed start made in a data folder of its
        own. A store shared with others (Redis) keeps everything, and `also` is not called."""
        self.close()
