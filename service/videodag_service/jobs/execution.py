"""Run one claimed job: feed its stored video through the video layer, store results as they come.

Used by both backends: the embedded worker threads and the RQ task call `JobExecutor.execute`.
Everything the video layer or the DAG raises becomes the job's recorded error, with the code
the synchronous call would have given. Three things end a run early without failing it:

* the store refuses a write (the job was cancelled, or re-run elsewhere): stop quietly;
* the process is shutting down (`should_stop`): the job goes back to QUEUED in the same
  attempt (`JobStore.release`), to run again from the start after the restart; a clean stop
  costs it no attempt. Should the store refuse that write, it stays RUNNING and recovery
  runs it again as it would after a crash;
* the job outlives `job_timeout_seconds`: it FAILS with DEADLINE_EXCEEDED.

A run that fails for the server's own passing trouble (a decoder killed, as by the
out-of-memory killer; threads, processes, memory or files short: the errors a caller is told
to retry) does not fail the job while it has attempts left: the job is queued again in its
next attempt (`JobStore.queue_next_attempt`), to run from the start after a pause
(`run_again_pause`), as a caller told to retry would. Its last attempt records the error.

An outage of the store (a Redis restart or failover) pauses the run instead of failing it:
each write is tried again for up to the store's `outage_patience_seconds` (less than a lease),
decoding held back meanwhile. A longer outage stops the run; the job runs again from the
start once the store is back: in the same attempt if the stop could be recorded (as for a
shutdown), else as after a crash, when its lease runs out. It is never FAILED for an outage:
a store that cannot be reached cannot record that either. The claim that starts a run waits
an outage out the same way; past the patience the job stays QUEUED, unclaimed, and the
store's outage error is raised: recovery hands the job over again (`JobStore.recover`).

A `JobObserver` (the server's metrics) hears of every frame stored and of every run's end:
OK, the recorded error's status code, or CANCELLED for a run stopped by the job's cancel.
A run interrupted by shutdown or taken over by another worker is not an end: the job runs
again, and that run is counted.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from typing import Protocol, TypeVar

from videodag_service.dag import DagPipelineService
from videodag_service.errors import (
    DeadlineExceeded,
    DecoderKilled,
    DiskFull,
    ErrorDetails,
    JobNotFound,
    ServerOutOfResources,
    UnknownSamplingOptions,
    VideodagError,
    logged,
)
from videodag_service.jobs.defaults import DEFAULT_MAX_ATTEMPTS
from videodag_service.jobs.model import Job, JobError, JobFrame, JobState, JobSummary, NodeTimingRecord, RunClaim
from videodag_service.jobs.progress import expected_frame_count
from videodag_service.jobs.store import JobStore, StoredResultsLost
from videodag_service.jobs.uploads import UploadStorage
from videodag_service.memory_release import video_work
from videodag_service.observability.logging import request_id_bound
from videodag_service.resource_errors import out_of_resources
from videodag_service.video import (
    FrameProcessed,
    RunFinished,
    RunStats,
    VideoFilePipelineService,
    VideoOpened,
    missing_stored_copy_as_error,
    naming_the_upload,
)
from videodag_service.wording import plain_number

logger = logging.getLogger(__name__)

_Written = TypeVar("_Written")

# How a running job tries a write again while its store is out of reach.
_OUTAGE_FIRST_RETRY_SECONDS = 0.1
_OUTAGE_LONGEST_RETRY_SECONDS = 2.0

# The server's own passing trouble, which a caller is told to retry: a job's run it ends runs again.
_PASSING_TROUBLE = (DecoderKilled, ServerOutOfResources)

RUN_AGAIN_PAUSE_SECONDS = 5.0
"""How long a job its run queued again waits, about, before its hand-over to a worker after its
first attempt: the retry hint of a killed decoder, longer than that of a want of resources
(other runs end meanwhile). Three times longer after each later attempt (`run_again_pause`)."""


def run_again_pause(ended_attempt: int) -> float:
    """The pause before a job its run queued again is handed over: `RUN_AGAIN_PAUSE_SECONDS` after
    its first attempt, three times longer after each later one, each between half and one and a
    half times that at random. Jobs whose runs met the same trouble at once (two decoders killed
    at a memory limit) would otherwise run again at once, and meet it again."""
    return RUN_AGAIN_PAUSE_SECONDS * 3.0 ** (max(1, ended_attempt) - 1) * random.uniform(0.5, 1.5)

# The status names of a job run's end, as the metrics of a synchronous run spell them.
STATUS_OK = "OK"
STATUS_CANCELLED = "CANCELLED"


class JobObserver(Protocol):
    """What the jobs report to the server's metrics (`ServerMetrics` is one), without importing them."""

    def record_run(self, pipeline_id: str, status: str) -> None:
        """A job's run ended with `status`, a gRPC status code name."""
        ...

    def record_frame(self, pipeline_id: str, count: int = 1) -> None:
        """A run stored the result of a frame."""
        ...

    def record_upload(self, pipeline_id: str, size_bytes: int) -> None:
        """A submitted video was received and stored."""
        ...


class JobObserverRelay:
    """A `JobObserver` that forwards to `target`, once set (by `JobService.observe`).

    The job service opens, and its workers may start queued jobs, before the server has made
    its metrics; the executor and the service hold this relay from the start. A failing
    observer is logged, never allowed to fail or strand a job.
    """

    def __init__(self, target: JobObserver | None = None) -> None:
        self.target = target

    def record_run(self, pipeline_id: str, status: str) -> None:
        if (target := self.target) is not None:
            self._guarded(target.record_run, pipeline_id, status)

    def record_frame(self, pipeline_id: str, count: int = 1) -> None:
        if (target := self.target) is not None:
            self._guarded(target.record_frame, pipeline_id, count)

    def record_upload(self, pipeline_id: str, size_bytes: int) -> None:
        if (target := self.target) is not None:
            self._guarded(target.record_upload, pipeline_id, size_bytes)

    @staticmethod
    def _guarded(record: Callable[..., None], *args: object) -> None:
        try:
            record(*args)
        except Exception:
            logger.exception("job metrics could not be recorded")


class JobInterrupted(Exception):
    """The worker is shutting down mid-job; the job was queued again (or left to recovery)."""


class _Superseded(Exception):
    """The store refused a write: the job is no longer this worker's to run."""


class _StoreOutOfReach(Exception):
    """The store stayed out of reach longer than a run waits for it; `outage` is its last error."""

    def __init__(self, outage: Exception) -> None:
        super().__init__(str(outage))
        self.outage = outage


def _never() -> bool:
    return False


class JobExecutor:
    """Runs claimed jobs; one instance serves any number of worker threads."""

    def __init__(
        self,
        store: JobStore,
        uploads: UploadStorage,
        dag: DagPipelineService,
        video: VideoFilePipelineService,
        *,
        job_timeout_seconds: float,
        retention_seconds: float,
        clock: Callable[[], float] | None = None,
        observer: JobObserver | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        """`clock`: the store's (`JobStore.clock`) unless given. `max_attempts`: the service's, past
        which a run the server's passing trouble ends fails the job rather than run it again."""
        self._store = store
        self._max_attempts = max_attempts
        self._uploads = uploads
        self._dag = dag
        self._video = video
        self._job_timeout_seconds = job_timeout_seconds
        self._retention_seconds = retention_seconds
        self._clock = clock or store.clock
        # Always behind a relay, whose guard keeps a failing observer from failing the job.
        self._observer = observer if isinstance(observer, JobObserverRelay) else JobObserverRelay(observer)
        self._pending_lock = threading.Lock()
        self._pending_ends: dict[RunClaim, tuple[Job, JobSummary | None, JobError | None, float]] = {}
        # The runs claimed and not yet ended, by (job id, attempt): what a worker's queue knows a run by;
        # and the (job id, attempt) pairs whose claim is in the store's hands.
        self._runs: dict[tuple[str, int], RunClaim] = {}
        self._claiming: set[tuple[str, int]] = set()
        self._released_from_outside: set[RunClaim] = set()

    def execute(self, job_id: str, attempt: int, should_stop: Callable[[], bool] = _never) -> JobState | None:
        """Claim the job for `attempt` and run it; returns the state it left, None if not claimed.
        QUEUED means the run queued the job again (in its next attempt, or its own should the store
        have lost results or been out of reach): it is the caller's to hand over again after
        `run_again_pause(attempt)`.

        Raises JobInterrupted when `should_stop` turned true mid-run (the job is QUEUED again),
        and the store's outage error when it stayed out of reach before the claim.
        What the run logs, its decoder's FFmpeg lines included, carries the job's id as its
        request id: a job runs after its SubmitJob call, often in another process, and its id
        is what its caller knows it by.
        """
        with request_id_bound(job_id), video_work():
            return self._execute(job_id, attempt, should_stop)

    def _execute(self, job_id: str, attempt: int, should_stop: Callable[[], bool]) -> JobState | None:
        self._claiming.add((job_id, attempt))
        try:
            job = self._claim(job_id, attempt, should_stop)
            if job is not None:  # known as claimed before it stops being known as claiming
                self._runs[job_id, attempt] = RunClaim.of(job)
        finally:
            self._claiming.discard((job_id, attempt))
        if job is None:
            logger.info("job %s attempt %d is no longer queued; skipped", job_id, attempt)
            return None
        try:
            return self._execute_claimed(job, self._runs[job_id, attempt], should_stop)
        finally:
            self._runs.pop((job_id, attempt), None)

    def _execute_claimed(self, job: Job, run: RunClaim, should_stop: Callable[[], bool]) -> JobState | None:
        logger.info("job %s attempt %d started: pipeline %s", job.id, job.attempt, job.pipeline_id)
        try:
            summary = self._run(job, run, should_stop)
        except _Superseded:
            logger.info("job %s attempt %d stopped: cancelled or taken over", job.id, job.attempt)
            self._count_if_cancelled(job)
        except JobInterrupted:
            self._release(run)
            raise
        except _StoreOutOfReach:
            return JobState.QUEUED if self._release(run) else JobState.RUNNING
        except Exception as error:
            trouble = out_of_resources(error) or error
            if isinstance(trouble, _PASSING_TROUBLE) and run.attempt < self._max_attempts:
                queued = self._queue_next_attempt(job, run, trouble)
                if queued is not None:
                    return JobState.QUEUED if queued else self._release_video_if_finished(job)
            self._log_failure(job, run, error, trouble)
            if not self._finish(job, run, error=self._error_record(run, trouble)):
                return JobState.RUNNING
        else:
            logger.info("job %s succeeded: %d frames", job.id, summary.frames_processed)
            try:
                if not self._finish(job, run, summary=summary):
                    return JobState.RUNNING
            except StoredResultsLost as lost:
                return self._run_again_for_lost_results(run, lost)
        return self._release_video_if_finished(job)

    def _queue_next_attempt(self, job: Job, run: RunClaim, trouble: VideodagError) -> bool | None:
        """Queue the job again in its next attempt; True when done, False when the job was no
        longer this run's (cancelled meanwhile), None when the store failed: the failure is then
        recorded as for any run's, and should that fail too, recovery runs the job again."""
        try:
            queued = self._store.queue_next_attempt(run, self._clock())
        except Exception as failure:
            logger.warning("job %s attempt %d: could not be queued again (%s: %s); its failure is recorded instead",
                           job.id, run.attempt, type(failure).__name__, failure)
            return None
        if not queued:
            logger.info("job %s attempt %d stopped: cancelled or taken over", job.id, run.attempt)
            self._count_if_cancelled(job)
            return False
        logger.warning("job %s attempt %d failed for the server's passing trouble (%s: %s); it runs again from the "
                       "start as attempt %d after a pause", job.id, run.attempt, trouble.reason, trouble,
                       run.attempt + 1)
        self._observer.record_run(job.pipeline_id, trouble.status_code)
        return True

    def _log_failure(self, job: Job, run: RunClaim, error: Exception, trouble: Exception) -> None:
        """A failure of the job's own making (a bad video, a node's error) is its caller's to
        mend and is logged at INFO; the server's passing trouble that failed it is the operator's
        (memory, processes), and a WARNING, as are the attempts before: in its last attempt, or
        in an earlier one the store could not queue again."""
        if not isinstance(trouble, _PASSING_TROUBLE):
            logger.info("job %s failed: %s", job.id, logged(error))
        elif run.attempt >= self._max_attempts:
            logger.warning("job %s failed in its last attempt (%d of %d) for the server's passing trouble (%s: %s)",
                           job.id, run.attempt, self._max_attempts, trouble.reason, trouble)
        else:
            logger.warning("job %s failed in attempt %d of %d for the server's passing trouble (%s: %s), which the "
                           "job store could not queue again", job.id, run.attempt, self._max_attempts,
                           trouble.reason, trouble)

    def _error_record(self, run: RunClaim, error: Exception) -> JobError:
        """The job's error; when the server's passing trouble ended its last attempt, saying so:
        the retry its message asks for is then its caller's, who may submit the job again."""
        recorded = JobError.from_exception(error)
        if not isinstance(error, _PASSING_TROUBLE) or run.attempt < self._max_attempts:
            return recorded
        return dataclasses.replace(
            recorded,
            message=f"{recorded.message} (the job's last attempt, {run.attempt} of {self._max_attempts})",
            metadata={**recorded.metadata, "attempts": str(run.attempt)},
        )

    def _run_again_for_lost_results(self, run: RunClaim, lost: StoredResultsLost) -> JobState:
        """Queue the job again in its attempt: its results have holes, which a run from the start fills."""
        logger.warning("%s: the job store lost results it had taken (restored to an earlier state?); the job "
                       "runs again from the start", lost)
        return JobState.QUEUED if self._release(run) else JobState.RUNNING

    def queued_attempt(self, job_id: str) -> int | None:
        """The attempt the job waits in, QUEUED; None when it is not queued (cancelled, deleted,
        or handed over and claimed meanwhile)."""
        try:
            job = self._store.get(job_id)
        except JobNotFound:
            return None
        return job.attempt if job.state is JobState.QUEUED else None

    def claimed_run(self, job_id: str, attempt: int) -> RunClaim | None:
        """The claim of this executor's run of the job's attempt, while it runs; None before its
        claim and after its end."""
        return self._runs.get((job_id, attempt))

    def _claim(self, job_id: str, attempt: int, should_stop: Callable[[], bool]) -> Job | None:
        """Claim the job, through an outage as a run's writes go. Each try repeats the first with
        its time, so a claim that reached the store before the outage took its reply is known
        for this one's (`JobStore.claim`) and not taken for another worker's."""
        claim = partial(self._store.claim, job_id, attempt, self._clock())
        try:
            return self._through_outage(claim, job_id, should_stop)
        except _StoreOutOfReach as out_of_reach:  # unclaimed, the job stays QUEUED: recovery hands it over again
            raise out_of_reach.outage from None

    def release_from_outside(self, job_id: str, attempt: int) -> bool:
        """Queue the job again in its attempt, for a run that did not stop when told (a node call
        longer than the time a stop gives it), from the stopping thread: a no-op if the run is
        not claimed yet or has ended meanwhile; the run's own release later is skipped, and its
        other writes find the job no longer theirs. A claim still in the store's hands (a slow
        disk) may have been made: the job, RUNNING in that attempt, is this executor's to release."""
        run = self.claimed_run(job_id, attempt)
        if run is None and (job_id, attempt) in self._claiming:
            run = self._claim_made_meanwhile(job_id, attempt)
        if run is None:
            return False
        self._released_from_outside.add(run)
        return self._store_release(run)

    def _claim_made_meanwhile(self, job_id: str, attempt: int) -> RunClaim | None:
        try:
            job = self._store.get(job_id)
        except Exception:  # deleted, or the store failing: recovery deals with it
            logger.warning("job %s: could not read it to release its run", job_id, exc_info=True)
            return None
        if job.state is not JobState.RUNNING or job.attempt != attempt:
            return None
        return RunClaim.of(job)

    def _release(self, run: RunClaim) -> bool:
        if run in self._released_from_outside:
            return True  # the stop did it, and may have closed the store since
        return self._store_release(run)

    def _store_release(self, run: RunClaim) -> bool:
        """Queue the interrupted job again in its attempt; on a store failure recovery does it later."""
        try:
            released = self._store.release(run, self._clock())
        except self._store.outage_errors as error:
            logger.warning("job %s attempt %d interrupted; left RUNNING for recovery, as the job store cannot be "
                           "reached (%s: %s)", run.job_id, run.attempt, type(error).__name__, error)
            return False
        except Exception:
            logger.exception("job %s attempt %d interrupted; left RUNNING for recovery", run.job_id, run.attempt)
            return False
        if released:
            logger.info("job %s attempt %d interrupted; queued to run again", run.job_id, run.attempt)
        return released

    def _run(self, job: Job, run: RunClaim, should_stop: Callable[[], bool]) -> JobSummary:
        if job.unknown_sampling:
            raise UnknownSamplingOptions(job.unknown_sampling)
        deadline = time.monotonic() + self._job_timeout_seconds
        spec = self._dag.get_pipeline(job.pipeline_id)
        frames_with_errors = 0
        stats: RunStats | None = None
        path = self._uploads.path(job.video.ref)
        events = self._video.stream_run(job.pipeline_id, path, job.sampling)
        with naming_the_upload(path.name, job.file_name), missing_stored_copy_as_error(path), closing(events):
            for event in events:
                if should_stop():
                    raise JobInterrupted(job.id)
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(
                        f"the job ran longer than its time limit of {plain_number(self._job_timeout_seconds)} s "
                        "(--job-timeout-seconds of the server that queued it)",
                        ErrorDetails(metadata={"job_timeout_seconds": plain_number(self._job_timeout_seconds)}),
                    )
                if isinstance(event, FrameProcessed):
                    frame = JobFrame(event.frame_index, event.timestamp_seconds, event.result)
                    if not self._through_outage(partial(self._store.append_frame, run, frame),
                                                job.id, should_stop):
                        raise _Superseded(job.id)
                    self._observer.record_frame(job.pipeline_id)
                    if event.result.get("errors"):
                        frames_with_errors += 1
                elif isinstance(event, VideoOpened):
                    total = expected_frame_count(event.info, job.sampling)
                    if not self._through_outage(
                        partial(self._store.record_video, run, event.info, total), job.id, should_stop
                    ):
                        raise _Superseded(job.id)
                elif isinstance(event, RunFinished):
                    stats = event.summary
        if stats is None:
            raise RuntimeError("the video layer ended without reporting the end of the run")
        return JobSummary(
            pipeline_id=spec.id,
            pipeline_version=spec.version,
            frames_processed=stats.frames_processed,
            frames_with_errors=frames_with_errors,
            wall_seconds=stats.wall_seconds,
            decode_seconds=stats.decode_seconds,
            node_timings=tuple(
                NodeTimingRecord(t.node_id, t.plugin, t.calls, t.total_seconds, t.errors) for t in stats.node_timings
            ),
            ended_early=stats.ended_early,
            frames_in_video=stats.frames_in_video,
            frames_unreadable=stats.frames_unreadable,
        )

    def _through_outage(self, write: Callable[[], _Written], job_id: str, should_stop: Callable[[], bool]) -> _Written:
        """`write()`, tried again while the store is out, for up to its `outage_patience_seconds`;
        a shutdown meanwhile interrupts the job as it would a frame. A write whose reply the
        outage lost can be repeated: the stores take the frame they stored last, or the claim
        they made last, once only."""
        patience = self._store.outage_patience_seconds
        began = time.monotonic()
        give_up_at = began + patience
        delay = _OUTAGE_FIRST_RETRY_SECONDS
        while True:
            try:
                written = write()
            except self._store.outage_errors as error:
                if time.monotonic() + delay > give_up_at:
                    logger.error("job %s: the job store has been out of reach for %.1f s (%s: %s); the run stops, "
                                 "and the job runs again once the store is back",
                                 job_id, time.monotonic() - began, type(error).__name__, error)
                    raise _StoreOutOfReach(error) from error
                if delay == _OUTAGE_FIRST_RETRY_SECONDS:
                    logger.warning("job %s: the job store cannot be reached (%s: %s); the run waits for it, "
                                   "for up to about %g s", job_id, type(error).__name__, error, patience)
                self._pause(delay, job_id, should_stop)
                delay = min(delay * 2, _OUTAGE_LONGEST_RETRY_SECONDS)
                continue
            if delay != _OUTAGE_FIRST_RETRY_SECONDS:
                logger.info("job %s: the job store is back; the run goes on", job_id)
            return written

    @staticmethod
    def _pause(seconds: float, job_id: str, should_stop: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if should_stop():
                raise JobInterrupted(job_id)
            time.sleep(min(left, 0.1))

    def _finish(self, job: Job, run: RunClaim, *, summary: JobSummary | None = None, error: JobError | None = None,
                ended_at: float | None = None) -> bool:
        """Record the job's end (at `ended_at`, or now); False when the store failed, and the end
        waits for `record_pending_ends`."""
        now = self._clock() if ended_at is None else ended_at
        try:
            finished = self._store.finish(run, now, now + self._retention_seconds, summary=summary, error=error)
        except StoredResultsLost:
            raise  # not a failure to record the end: the end is not the job's
        except Exception as failure:
            # A store that cannot record the end (disk full, connection lost) leaves the job
            # RUNNING: the end is tried again at each maintenance, and should this process
            # end first, recovery runs the job again rather than losing it.
            with self._pending_lock:
                first_failure = run not in self._pending_ends
                self._pending_ends.setdefault(run, (job, summary, error, now))
            self._log_unrecorded_end(job, failure, first_failure)
            return False
        if finished:
            self._observer.record_run(job.pipeline_id, STATUS_OK if error is None else error.status_code)
        else:
            logger.info("job %s attempt %d: its end was not recorded (cancelled or taken over)", job.id, job.attempt)
            self._count_if_cancelled(job)
        return True

    def _log_unrecorded_end(self, job: Job, failure: Exception, first_failure: bool) -> None:
        """Once per job and store failure: its end is tried again every few seconds for as long as
        the disk stays full or the store out of reach, and a traceback each time would bury the log.
        Those two are expected and said in a line; any other failure gets its traceback, once."""
        if not first_failure:
            logger.debug("job %s: its end still cannot be recorded (%s: %s)", job.id, type(failure).__name__, failure)
        elif isinstance(failure, (DiskFull, *self._store.outage_errors)):
            logger.warning("job %s: could not record its end (%s: %s); trying again at each maintenance until the "
                           "store takes it", job.id, type(failure).__name__, failure)
        else:
            logger.exception("job %s: could not record its end; trying again at each maintenance", job.id)

    def _count_if_cancelled(self, job: Job) -> None:
        """Count a run the store stopped as CANCELLED when the job's cancel stopped it; one taken
        over by another worker (a later attempt) is that worker's to count when it ends."""
        expected: tuple[type[Exception], ...] = (JobNotFound, *self._store.outage_errors)
        try:
            current = self._store.get(job.id)
        except expected:  # deleted already, or the store is out
            return
        except Exception:  # the store failing otherwise: the run goes uncounted, the job is unharmed
            logger.warning("job %s: could not read its state to count its stopped run", job.id, exc_info=True)
            return
        if current.state is JobState.CANCELLED and current.attempt == job.attempt:
            self._observer.record_run(job.pipeline_id, STATUS_CANCELLED)

    def record_pending_ends(self) -> None:
        """Try again to record the ends a store failure left unrecorded (the jobs stay RUNNING
        until then, their watchers waiting and their videos kept)."""
        with self._pending_lock:
            pending = list(self._pending_ends.items())
        for run, (job, summary, error, ended_at) in pending:
            # The job ended when it ended, not when the store could at last record it.
            try:
                recorded = self._finish(job, run, summary=summary, error=error, ended_at=ended_at)
            except StoredResultsLost as lost:
                with self._pending_lock:
                    self._pending_ends.pop(run, None)
                self._run_again_for_lost_results(run, lost)
                continue
            if recorded:
                logger.info("job %s: its end is recorded at last", job.id)
                with self._pending_lock:
                    self._pending_ends.pop(run, None)
                self._release_video_if_finished(job)

    def _release_video_if_finished(self, job: Job) -> JobState | None:
        """Delete the upload once no run will need it again; returns the job's state."""
        try:
            state = self._store.get(job.id).state
        except JobNotFound:
            state = None
        except Exception:
            logger.exception("job %s: could not read its state; its video is kept", job.id)
            return JobState.RUNNING
        if state is None or state.is_finished:
            try:
                self._uploads.delete(job.video.ref)
            except OSError:
                # Left for retention to remove with the job; the job itself is done.
                logger.exception("job %s: could not delete its video", job.id)
        return state
