"""`JobService`: the job operations the servicer calls, the same over every backend.

It validates a submission before storing anything, stores the video, records the job and
hands it to the queue; it reads, lists, cancels, deletes and watches jobs in the store; and a
maintenance thread applies retention, recovers interrupted or stranded jobs and removes the
videos no job needs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from videodag_service.dag import DagPipelineService
from videodag_service.errors import (
    ErrorDetails,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidOptions,
    JobStoreUnavailable,
)
from videodag_service.jobs.defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUED_JOBS,
    MAX_MAINTENANCE_INTERVAL_SECONDS,
)
from videodag_service.jobs.dispatch import JobQueue
from videodag_service.jobs.execution import JobObserver, JobObserverRelay
from videodag_service.jobs.ids import checked_idempotency_key, checked_job_id, job_id_from_page_token, new_job_id
from videodag_service.jobs.model import Job, JobPage, JobRequest, JobState, StoredVideo, WatchEvent
from videodag_service.jobs.queue_admission import QueueAdmission
from videodag_service.jobs.store import JobStore
from videodag_service.jobs.stray_videos import STRAY_VIDEO_GRACE_SECONDS, remove_stray_videos
from videodag_service.jobs.uploads import UploadStorage
from videodag_service.jobs.watch import watch_job

logger = logging.getLogger(__name__)

# A retention pass names this many of the jobs it removed in its log line (each is named at DEBUG).
_PURGED_IDS_LOGGED = 10
# The retry hint of a job store outage: long enough for a Redis failover, short for a blip.
RETRY_AFTER_OUTAGE_SECONDS = 2.0
# How long a watch keeps its job from the other replicas' retention, in maintenance intervals:
# each pass renews the mark, and one that runs late or fails (a store outage) must not let it lapse.
_WATCH_MARK_INTERVALS = 3
# And at least this long, whatever the interval: a pass takes time of its own (a store command
# may wait out a 5 s socket timeout, `CONNECTION_TIMEOUTS`) before it renews the mark.
_WATCH_MARK_MIN_SECONDS = 30.0
# Stray videos are looked for this many times per grace: each look reads the job of every video
# older than the grace, which a backlog of long-queued jobs makes many.
_STRAY_VIDEO_LOOKS_PER_GRACE = 10

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def _never() -> bool:
    return False


class _CreationStamp:
    """A job's id and create time, taken once its upload has arrived and passed the checks.

    The contract's create_time is when the upload was stored and the job queued, and ids sort
    by it: taken when a slow upload began instead, the job would list among older ones, and a
    paged listing already past that point would never show it.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.job_id = ""
        self.created_at = 0.0

    def take(self) -> str:
        """The new job id (the upload storage names the video after it)."""
        self.created_at = self._clock()
        self.job_id = new_job_id(self.created_at)
        return self.job_id


class JobService:
    """Submit, read, list, cancel, delete and watch jobs; owns the store, queue and maintenance.

    retention_seconds: how long a finished job, its results and files are kept.
    max_attempts: runs an interrupted job gets before it is FAILED (a video that crashes its
        worker every time must not loop forever).
    maintenance_interval_seconds: how often retention and recovery run; a watch keeps its job
        from the other replicas' retention for a few of them.
    stray_video_grace_seconds: how old a stored video of no queued or running job must be
        before maintenance removes it (`remove_stray_videos`).
    observer: the relay the backend's executor reports to, if it runs jobs in this process;
        `observe` points it, and the service's own upload counts, at the server's metrics.
    """

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        uploads: UploadStorage,
        pipelines: DagPipelineService,
        *,
        max_upload_bytes: int,
        retention_seconds: float,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
        maintenance_interval_seconds: float = MAX_MAINTENANCE_INTERVAL_SECONDS,
        stray_video_grace_seconds: float = STRAY_VIDEO_GRACE_SECONDS,
        clock: Callable[[], float] | None = None,
        observer: JobObserverRelay | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._uploads = uploads
        self._pipelines = pipelines
        self._max_upload_bytes = max_upload_bytes
        self._retention_seconds = retention_seconds
        self._max_attempts = max_attempts
        self._admission = QueueAdmission(max_queued_jobs, queue.depth)
        self._maintenance_interval_seconds = maintenance_interval_seconds
        self._watch_mark_seconds = max(_WATCH_MARK_MIN_SECONDS, _WATCH_MARK_INTERVALS * maintenance_interval_seconds)
        self._stray_video_grace_seconds = stray_video_grace_seconds
        self._clock = clock or store.clock  # the time all of the store's processes go by
        # Not at the first pass: a start warns of videos it cannot place (`backends`), and their
        # operator gets the time of one look to stop the server.
        self._next_stray_video_look = self._clock() + stray_video_grace_seconds / _STRAY_VIDEO_LOOKS_PER_GRACE
        self._observer = observer if observer is not None else JobObserverRelay()
        self._watched: Counter[str] = Counter()
        """Jobs watched here now, with how many watches each: retention waits for them, so a
        watch of a job that finishes gets its final state (with a retention of 0, the job would
        go first)."""
        self._watched_lock = threading.Lock()
        self._closing = threading.Event()
        self._store_problem: str | None = None
        self._maintenance = threading.Thread(target=self._maintain, name="videodag-job-maintenance", daemon=True)

    def start(self) -> JobService:
        """Recover what a previous run left (so queued jobs run), then maintain periodically."""
        self.run_maintenance()
        self._maintenance.start()
        return self

    def observe(self, observer: JobObserver) -> None:
        """Report uploads, and the runs and frames of jobs run in this process, to `observer`.

        Set after the service opened, since the server's metrics watch its queue depth; jobs
        run by RQ workers, in processes of their own, are not reported here.
        """
        self._observer.target = observer

    def stop_taking_jobs(self) -> None:
        """The server is draining: start no further job here; running ones go on until `close`."""
        self._queue.stop_taking()

    def wait_for_running_jobs(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the jobs running in this process; True if none is left."""
        return self._queue.wait_until_idle(timeout)

    def close(self, *, discard_if_unused: bool = False) -> None:
        """Stop maintenance and the queue; running embedded jobs are interrupted and queued again.

        `discard_if_unused`: a start that failed after making its data folder leaves nothing
        in it: an embedded store holding no job is removed (`JobStore.close_and_discard`), then
        the uploads folders if empty. Never for a store other servers share (Redis).
        """
        self._closing.set()
        if self._maintenance.is_alive():
            self._maintenance.join()
        self._queue.close()
        if discard_if_unused:
            self._store.close_and_discard(also=self._uploads.remove_if_empty)
        else:
            self._store.close()

    def submit(self, request: JobRequest, chunks: Iterable[bytes | memoryview]) -> Job:
        """Store the video and queue the job; returns it QUEUED (or the job holding the key).

        The pipeline and key are checked before any byte is read, so a bad submit costs no
        disk; a repeated idempotency key returns its job without reading the chunks.
        """
        self._pipelines.get_pipeline(request.pipeline_id)
        key = checked_idempotency_key(request.idempotency_key)
        if key is not None:
            existing = self._store.find_by_idempotency_key(key)
            if existing is not None:
                return _same_submission(existing, request)
        # A store that cannot take the job refuses it before the upload, not after (gigabytes, perhaps).
        self._store.check_writable()
        with self._admission.admitted():
            return self._store_and_queue(request, key, chunks)

    def _store_and_queue(self, request: JobRequest, key: str | None, chunks: Iterable[bytes | memoryview]) -> Job:
        stamp = _CreationStamp(self._clock)
        video = self._uploads.store(
            stamp.take,
            chunks,
            max_upload_bytes=self._max_upload_bytes,
            declared_size=request.declared_size_bytes,
            declared_sha256=request.declared_sha256,
            file_name=request.file_name,
        )
        self._observer.record_upload(request.pipeline_id, video.size_bytes)
        job = Job(
            id=stamp.job_id,
            state=JobState.QUEUED,
            pipeline_id=request.pipeline_id,
            sampling=request.sampling,
            video=video,
            created_at=stamp.created_at,
            file_name=request.file_name,
            idempotency_key=key,
        )
        try:
            stored = self._store.create(job)
        except self._store.outage_errors as error:
            raise self._creation_unknown(job, error) from error
        except BaseException:
            self._uploads.delete(video.ref)
            raise
        if stored.id != job.id:
            self._uploads.delete(video.ref)
            return _same_submission(stored, request, video)
        try:
            self._queue.dispatch(stored)
        except self._store.outage_errors as error:
            # The job is stored: refused with "retry", the caller (or its gRPC retry policy) would
            # submit it again, and both would run. Maintenance hands over a job left undispatched.
            logger.warning("job %s stored, not yet handed to the workers (%s: %s): maintenance hands it over",
                           job.id, type(error).__name__, error)
        logger.info("job %s queued: pipeline %s, %d bytes", job.id, job.pipeline_id, video.size_bytes)
        return stored

    def _creation_unknown(self, job: Job, error: Exception) -> JobStoreUnavailable:
        """The answer to a submission whose job the store may have recorded, or not: a command
        whose reply an outage took (a Redis stall past the socket timeout) may still be applied
        once the store is back. The video is kept, since such a job would fail without it; if no
        job came of it, maintenance removes it after `stray_video_grace_seconds`. The caller hears
        the truth: retry, but the job may exist, under the id named."""
        logger.warning("job %s: the job store could not confirm it was recorded (%s: %s); its video is kept, "
                       "and removed in time if the job never appears", job.id, type(error).__name__, error)
        retry = (
            "a retry with the same idempotency key returns it if so" if job.idempotency_key is not None
            else "a retry without an idempotency key may create a second job"
        )
        message = ("the job store could not be reached to record the job ({}); it may have been created all the "
                   f"same, as job {job.id} (GetJob tells once the store is back): {retry}")
        return JobStoreUnavailable(
            message.format(type(error).__name__),
            ErrorDetails(metadata={"job_id": job.id}, retry_after_seconds=RETRY_AFTER_OUTAGE_SECONDS),
            logged_message=message.format(f"{type(error).__name__}: {error}"),
        )

    def as_domain_error(self, error: Exception) -> Exception:
        """An outage of the store's backend as JobStoreUnavailable (retry shortly); other errors as they are.
        The caller is told the kind of failure, the log its text too: it names the store's address."""
        if isinstance(error, self._store.outage_errors):
            return JobStoreUnavailable(
                f"the job store cannot be reached ({type(error).__name__}); retry shortly",
                ErrorDetails(retry_after_seconds=RETRY_AFTER_OUTAGE_SECONDS),
                logged_message=f"the job store cannot be reached ({type(error).__name__}: {error}); retry shortly",
            )
        return error

    def queue_depth(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.depth()

    def get(self, job_id: str) -> Job:
        return self._store.get(checked_job_id(job_id))

    def list_jobs(self, page_size: int = 0, page_token: str = "", states: Sequence[JobState] = ()) -> JobPage:
        """Jobs newest first; page_size 0 means DEFAULT_PAGE_SIZE, larger than MAX_PAGE_SIZE is capped."""
        if violations := listing_violations(page_size, page_token):
            raise InvalidOptions(violations)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return self._store.list_jobs(size, job_id_from_page_token(page_token), tuple(states))

    def cancel(self, job_id: str) -> Job:
        now = self._clock()
        job, previous = self._store.cancel(checked_job_id(job_id), now, now + self._retention_seconds)
        if previous is JobState.QUEUED:
            # No worker will claim it now; a running one deletes the video when it stops.
            self._uploads.delete(job.video.ref)
        if previous is not JobState.CANCELLED:
            logger.info("job %s cancelled (was %s)", job.id, previous.value)
        return job

    def delete(self, job_id: str) -> None:
        job = self._store.delete(checked_job_id(job_id))
        self._uploads.delete(job.video.ref)
        logger.info("job %s deleted", job.id)

    def watch(
        self,
        job_id: str,
        after_frame_index: int | None = None,
        stop_requested: Callable[[], bool] = _never,
    ) -> Iterator[WatchEvent]:
        """The job's events until it is finished; see `watch_job` for the guarantees."""
        if after_frame_index is not None and after_frame_index < -1:
            raise InvalidOptions([FieldViolation("after_frame_index", f"must be -1 or more, got {after_frame_index}")])
        checked = checked_job_id(job_id)
        self._store.get(checked)  # NOT_FOUND now, before the stream starts
        return self._kept_while_watched(
            checked, watch_job(self._store, checked, after_frame_index, stop_requested=stop_requested)
        )

    def _kept_while_watched(self, job_id: str, events: Iterator[WatchEvent]) -> Iterator[WatchEvent]:
        with self._watched_lock:
            self._watched[job_id] += 1
        try:
            self._mark_watched(job_id)
            yield from events
        finally:
            with self._watched_lock:
                self._watched[job_id] -= 1
                if not self._watched[job_id]:
                    del self._watched[job_id]

    def _mark_watched(self, job_id: str) -> None:
        """Keep the job from the other replicas' retention too; each maintenance renews the mark.
        A store that takes no write now (a Redis replica during a failover) still serves the
        watch's reads: the watch goes on, kept from this server's retention only."""
        try:
            self._store.mark_watched((job_id,), self._clock() + self._watch_mark_seconds)
        except self._store.outage_errors as error:
            logger.warning("job %s: its watch could not be marked in the job store (%s: %s)", job_id,
                           type(error).__name__, error)

    def run_maintenance(self) -> None:
        """Delete jobs past retention and abandoned partial uploads, hand interrupted or stranded
        jobs to workers again, erase what deletions left in the store's files, and now and then
        remove the videos no job needs."""
        self._check_store_in_place()
        self._queue.retry_stranded()
        now = self._clock()
        with self._watched_lock:
            watched = frozenset(self._watched)
        self._store.mark_watched(watched, now + self._watch_mark_seconds)
        self._remove_expired(self._store.purge_expired(now, keep=watched))
        try:
            if abandoned := self._uploads.remove_abandoned_uploads():
                logger.info("removed %d partial job upload(s) abandoned by a server that was stopped mid-upload",
                            abandoned)
        except OSError as error:  # the folder unreadable for a moment: the next maintenance tries again
            logger.warning("could not look for abandoned job uploads: %s", error)
        recovered = self._store.recover(now, self._max_attempts, now + self._retention_seconds,
                                        self._queue.lost_hand_overs)
        for job in recovered:
            if job.state is JobState.QUEUED:
                logger.info("job %s handed to the workers (attempt %d)", job.id, job.attempt)
                self._queue.dispatch(job)
            else:
                if job.state is JobState.CANCELLED:  # its run is over: deleted already unless its worker vanished
                    logger.debug("job %s: cancelled while it ran, its lease has ended", job.id)
                else:  # given up after `max_attempts` interrupted runs or lost hand-overs: its video goes
                    logger.warning("job %s failed: its run vanished in attempt %d, its last", job.id, job.attempt)
                try:
                    self._uploads.delete(job.video.ref)
                except OSError:  # left for retention to remove with the job; the start goes on
                    logger.exception("job %s: could not delete its video", job.id)
        self._store.erase_deleted_data()  # what a reader or a full disk kept from the deletions' own erasure
        self._remove_stray_videos(now)

    def _remove_stray_videos(self, now: float) -> None:
        """Now and then, the videos older than the grace whose job finished or was never recorded."""
        if now < self._next_stray_video_look:
            return
        # Only where the store takes writes: a replica being synced in a failover may not know of
        # every job yet, and its "no such job" would cost a queued job its video.
        self._store.check_writable()
        try:
            removed = remove_stray_videos(self._store, self._uploads,
                                          stored_before=now - self._stray_video_grace_seconds)
        except OSError as error:  # the folder unreadable for a moment: the next look tries again
            logger.warning("could not look for videos no job needs: %s", error)
            return
        self._next_stray_video_look = now + self._stray_video_grace_seconds / _STRAY_VIDEO_LOOKS_PER_GRACE
        if removed:
            logger.info("removed %d video(s) of jobs finished or never recorded (a submission an outage left "
                        "unanswered, say)", removed)

    def _remove_expired(self, purged: list[Job]) -> None:
        """Delete the purged jobs' videos (a finished job's is gone already, unless a failure kept
        it) and say so in one line: a line per job would bury the log in a pass over many jobs."""
        for job in purged:
            try:
                self._uploads.delete(job.video.ref)
            except OSError as error:  # the job is gone: its video is removed later, as one of an unknown job
                logger.warning("job %s: could not delete its video (%s); it is removed later", job.id, error)
            logger.debug("job %s removed: retention ended", job.id)
        if len(purged) > _PURGED_IDS_LOGGED:
            logger.info("%d jobs removed, their retention ended: %s and %d more", len(purged),
                        ", ".join(job.id for job in purged[:_PURGED_IDS_LOGGED]), len(purged) - _PURGED_IDS_LOGGED)
        elif purged:
            logger.info("job(s) removed, their retention ended: %s", ", ".join(job.id for job in purged))

    def _check_store_in_place(self) -> None:
        """Say once, as an error, that the store's files went from under it; again if it happens anew."""
        problem = self._store.kept_in_place()
        if problem is not None and problem != self._store_problem:
            logger.error("job store: %s", problem)
        self._store_problem = problem

    def _maintain(self) -> None:
        while not self._closing.wait(self._maintenance_interval_seconds):
            try:
                self.run_maintenance()
            except self._store.outage_errors as error:  # expected while the store is out: no traceback
                logger.warning("job maintenance skipped: the job store cannot be reached (%s: %s); retrying in %.0f s",
                               type(error).__name__, error, self._maintenance_interval_seconds)
            except Exception:
                logger.exception("job maintenance failed; retrying in %.0f s", self._maintenance_interval_seconds)


def _same_submission(existing: Job, request: JobRequest, uploaded: StoredVideo | None = None) -> Job:
    """The job an idempotency key was first used for, if this is the same submission again: the
    same pipeline and options, and no sign of another video (a size or SHA-256 declared, before
    the upload, or the video `uploaded`, when the key's job was created meanwhile)."""
    video = existing.video
    sizes = {request.declared_size_bytes, uploaded.size_bytes if uploaded else None} - {None}
    hashes = {(request.declared_sha256 or "").strip().lower(), uploaded.sha256 if uploaded else ""} - {""}
    differs = (
        "pipeline" if existing.pipeline_id != request.pipeline_id
        else "sampling" if not existing.sampling.takes_the_same_frames_as(request.sampling)
        else "video" if sizes - {video.size_bytes} or hashes - {video.sha256.lower()}
        else None
    )
    if differs is not None:
        raise IdempotencyKeyReused(existing.idempotency_key or "", existing.id, existing.pipeline_id, differs)
    return existing


def listing_violations(page_size: int, page_token: str) -> list[FieldViolation]:
    """Every bad field of a listing's page at once, for the caller to name with its filter's."""
    violations = []
    if page_size < 0:
        violations.append(FieldViolation("page_size", f"must be 0 (the default) or more, got {page_size}"))
    try:
        job_id_from_page_token(page_token)
    except InvalidOptions as error:
        violations += error.details.field_violations
    return violations
