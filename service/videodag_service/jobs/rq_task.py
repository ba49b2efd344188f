"""The worker side of the Redis backend: the function RQ workers run (`run_job`) and its config.

Start workers (`videodag-worker`, `worker_command`) on any machine that reaches Redis and sees
the shared upload directory at the same path. RQ's own command runs the same worker:

    rq worker --url redis://HOST:6379/0 --serializer json \\
        --worker-class videodag_service.jobs.rq_task.VideodagWorker videodag-jobs

`--serializer json` matches the server's (job arguments are plain JSON: a job id, an attempt
number and this module's `WorkerConfig`; never video bytes or frames). `VideodagWorker` lives
in `rq_worker` and is re-exported here, under the name operators give: so named, the worker's
parent process imports this module, and with it the video and DAG modules, once, and each
job's forked work horse starts without importing OpenCV again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import redis
import rq

from videodag_service.dag import BUILTIN_PIPELINE_DIR, DagPipelineService
from videodag_service.errors import JobNotFound
from videodag_service.jobs.defaults import DEFAULT_MAX_ATTEMPTS
from videodag_service.jobs.execution import JobExecutor, run_again_pause
from videodag_service.jobs.model import JobError, JobState, RunClaim
from videodag_service.jobs.redis_store import CONNECTION_TIMEOUTS, RedisJobStore
from videodag_service.jobs.rq_worker import VideodagWorker
from videodag_service.jobs.uploads import DirectoryUploadStorage
from videodag_service.video import (
    DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS,
    DEFAULT_DECODE_RUN_TIMEOUT_SECONDS,
    Isolation,
    VideoFilePipelineService,
    VideoLimits,
)

logger = logging.getLogger(__name__)

__all__ = ["RUN_JOB", "VideodagWorker", "WorkerConfig", "run_job"]

RUN_JOB = f"{__name__}.run_job"
# How often a work horse pausing before a hand-over looks whether its worker was told to stop.
_STOP_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs besides the job id; set by the server, so all replicas agree."""

    key_prefix: str
    upload_dir: str
    pipeline_dir: str | None
    job_timeout_seconds: float
    retention_seconds: float
    lease_seconds: float
    video_limits: dict[str, Any]
    # Defaults: a job queued by a server of an earlier release, without these settings, still runs.
    decode_isolation: Isolation = "process"
    decode_frame_timeout_seconds: float | None = DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS
    decode_run_timeout_seconds: float | None = DEFAULT_DECODE_RUN_TIMEOUT_SECONDS
    node_timeout_seconds: float | None = None
    frame_workers: int | None = None
    max_result_bytes: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> WorkerConfig:
        """The config a server queued, without the settings this worker does not know.

        During a rolling upgrade a worker of the earlier release gets configs from newer
        servers: refusing them would leave every job they queue QUEUED until the worker is
        replaced, where running it under the worker's own behaviour for the new setting is
        what the worker does for every other job.
        """
        known = _known_settings(cls, config, "")
        if isinstance(known.get("video_limits"), dict):
            known["video_limits"] = _known_settings(VideoLimits, known["video_limits"], "video_limits.")
        return cls(**known)


def _known_settings(kind: type, settings: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The settings `kind` (a dataclass) has, warning of the others."""
    known = {field.name for field in fields(kind)}
    if unknown := sorted(set(settings) - known):
        logger.warning("this worker is older than the server that queued the job: ignoring the settings %s",
                       ", ".join(prefix + name for name in unknown))
    return {name: value for name, value in settings.items() if name in known}


class _Unrunnable(Exception):
    """This worker cannot run the job at all; the message says why, for the job's error."""


def run_job(job_id: str, attempt: int, config: dict[str, Any]) -> str | None:
    """Run one attempt of a job; returns the state it left (RQ keeps it only briefly)."""
    worker_config = WorkerConfig.from_json(config)
    current = rq.get_current_job()
    if current is None:
        raise RuntimeError("run_job runs inside an RQ worker only")
    connection = _decoding_connection(current.connection)
    store = RedisJobStore(connection, key_prefix=worker_config.key_prefix, lease_seconds=worker_config.lease_seconds)
    try:
        try:
            executor = _executor(store, worker_config)
        except _Unrunnable as unrunnable:
            return _fail_unrunnable(store, worker_config, job_id, attempt, str(unrunnable))
        with _LeaseKeeper(store, functools.partial(executor.claimed_run, job_id, attempt), job_id):
            state = executor.execute(job_id, attempt)
        if state is JobState.QUEUED:
            _hand_over_next_attempt(store, current, config, job_id, attempt)
    finally:
        store.close()
    return None if state is None else state.value


def _hand_over_next_attempt(store: RedisJobStore, task: rq.job.Job, config: dict[str, Any], job_id: str,
                            attempt: int) -> None:
    """Hand the job its run queued again in its next attempt to RQ, after the pause
    (`run_again_pause`): left to the servers' maintenance, it would wait for their
    dispatch grace (30 s), which is there for a replica that died between a job's creation and
    its hand-over. Should this work horse end meanwhile, or Redis fail, the maintenance still
    does it, as it does for a job queued again in the same attempt (results lost, Redis out of
    reach): its RQ task is this one's, which RQ ends once this function returns.

    Its worker told to stop meanwhile (it waits for this horse), the pause ends early
    (`_pause_unless_stopping`) and the job is handed over at once, for another worker to take
    (this one takes no more): left to the maintenance, it would wait until 30 s after it was
    queued again, and for a replica to run. Only the rest of its pause is given up: jobs that met
    the same trouble at once keep theirs, in their own workers. Its claim still keeps it to one
    run at a time.

    The task gets `config` as the server queued it, settings this worker does not know included,
    for a worker of a later release to apply. The hand-over is the queue's own
    (`RqJobQueue.dispatch`), imported here: that module imports this one."""
    from videodag_service.jobs.rq_queue import RqJobQueue

    connection = _with_store_timeouts(task.connection, decode_responses=False)
    try:
        if _pause_unless_stopping(connection, task.worker_name, run_again_pause(attempt)):
            logger.info("job %s: this worker is stopping; the job is handed over without the rest of its pause",
                        job_id)
        job = store.get(job_id)
        if job.state is not JobState.QUEUED or job.attempt == attempt or not store.awaits_hand_over(job_id):
            return  # cancelled meanwhile, handed over by a server's maintenance, or in the same attempt
        queue = RqJobQueue(connection, WorkerConfig.from_json(config), undispatched_key=store.undispatched_key,
                           handed_over_key=store.handed_over_key, queue_name=task.origin, clock=store.clock,
                           config_as_queued=config)
        queue.dispatch(job)
    except JobNotFound:
        return
    except redis.RedisError as error:
        logger.warning("job %s: could not be handed to the workers again (%s: %s); the servers' maintenance "
                       "does it", job_id, type(error).__name__, error)
        return
    finally:
        connection.close()
    logger.info("job %s handed to the workers again (attempt %d)", job_id, job.attempt)


def _pause_unless_stopping(connection: redis.Redis, worker_name: str | None, seconds: float) -> bool:
    """Sleep `seconds`, looking every `_STOP_CHECK_SECONDS` whether the worker `worker_name`,
    whose work horse this is, was told to stop (SIGTERM, SIGINT): True, at once, if so. RQ's
    worker, told so while busy, records the request in its hash (`shutdown_requested_date`,
    gone with the hash when a worker of the same name starts again), then waits for its horse:
    sleeping the whole pause, up to 23 s, held its exit past a supervisor's stop timeout
    (Docker's is 10 s), and it was killed.

    A look Redis does not answer (an outage, up to the store's 5 s timeout) counts as no stop,
    and the pause goes on: the worker skips recording its stop while Redis is out
    (`VideodagWorker.set_shutdown_requested_date`), so no answer tells of one; ending the pause on
    an error would hand over early, on any blip, the very jobs the pause spreads out, and the
    hand-over would most likely meet the same outage. At worst the horse sleeps the whole pause,
    and one look's timeout more. Without `worker_name` (RQ did not give it), the whole pause."""
    key = None if worker_name is None else VideodagWorker.redis_worker_namespace_prefix + worker_name
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if key is not None and _told_to_stop(connection, key):
            return True
        time.sleep(min(_STOP_CHECK_SECONDS, left))
    return False


def _told_to_stop(connection: redis.Redis, worker_key: str) -> bool:
    """Whether RQ recorded a stop request in the worker's hash; False when Redis does not answer."""
    try:
        return bool(connection.hexists(worker_key, "shutdown_requested_date"))
    except redis.RedisError:
        return False


def _executor(store: RedisJobStore, worker_config: WorkerConfig) -> JobExecutor:
    """The job's executor; _Unrunnable when its pipelines do not load or its run cannot be set up."""
    try:
        dag = _dag(worker_config)
    except Exception as error:
        raise _Unrunnable(f"the worker that took the job cannot load its pipelines: {error}") from error
    try:
        return JobExecutor(
            store,
            DirectoryUploadStorage(worker_config.upload_dir),
            dag,
            VideoFilePipelineService(
                dag,
                limits=VideoLimits(**worker_config.video_limits),
                isolation=worker_config.decode_isolation,
                decode_frame_timeout_seconds=worker_config.decode_frame_timeout_seconds,
                decode_run_timeout_seconds=worker_config.decode_run_timeout_seconds,
            ),
            job_timeout_seconds=worker_config.job_timeout_seconds,
            retention_seconds=worker_config.retention_seconds,
            max_attempts=worker_config.max_attempts,
        )
    except Exception as error:
        raise _Unrunnable(
            f"the worker that took the job cannot set up its run: {type(error).__name__}: {error}"
        ) from error


def _fail_unrunnable(store: RedisJobStore, worker_config: WorkerConfig, job_id: str, attempt: int,
                     message: str) -> str | None:
    """Fail a job this worker cannot run at all: its pipelines do not load (a shared pipeline
    folder edited into an invalid one, one missing on this machine, a worker of another
    release), or its decoders or upload folder cannot be set up. Left to RQ, the task would
    fail unclaimed, and recovery hand the job over again until its attempts ran out, to give
    it up as vanished without saying why."""
    now = store.clock()
    job = store.claim(job_id, attempt, now)
    if job is None:
        return None
    logger.error("job %s failed: %s", job_id, message)
    store.finish(RunClaim.of(job), now, now + worker_config.retention_seconds,
                 error=JobError("INTERNAL", "INTERNAL", message))
    try:
        DirectoryUploadStorage(worker_config.upload_dir).delete(job.video.ref)
    except Exception as problem:  # the folder may be what the run could not be set up with
        logger.warning("job %s: its video could not be removed: %s", job_id, problem)
    return JobState.FAILED.value


def _dag(worker_config: WorkerConfig) -> DagPipelineService:
    return _loaded_dag(worker_config.pipeline_dir, worker_config.node_timeout_seconds, worker_config.frame_workers,
                       worker_config.max_result_bytes)


@functools.cache
def _loaded_dag(pipeline_dir: str | None, node_timeout_seconds: float | None, frame_workers: int | None,
                max_result_bytes: int | None) -> DagPipelineService:
    """The pipelines, loaded once per worker process, with the server's node time limit, result
    size limit and frame workers (one per core of this machine unless the server set a number)."""
    dag = DagPipelineService.from_folder(Path(pipeline_dir) if pipeline_dir else BUILTIN_PIPELINE_DIR)
    dag.node_timeout_seconds = node_timeout_seconds
    dag.max_result_bytes = max_result_bytes
    if frame_workers:
        dag.frame_workers = frame_workers
    return dag


def _decoding_connection(connection: redis.Redis) -> redis.Redis:
    """RQ needs raw bytes from Redis, the job store needs str: same server, second pool."""
    return _with_store_timeouts(connection, decode_responses=True)


def _with_store_timeouts(connection: redis.Redis, *, decode_responses: bool) -> redis.Redis:
    """A connection to RQ's Redis with its own pool and the store's timeouts: RQ's are minutes
    long, for its blocking dequeue."""
    pool = connection.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": decode_responses, **CONNECTION_TIMEOUTS}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class _LeaseKeeper:
    """Renews the job's lease from a thread, so a long frame cannot make the job look abandoned.

    Results also renew it; this covers the time before the first frame (opening the video,
    loading models) and pipelines slower than the lease. It starts before the claim, which
    happens inside the run, and renews the lease of the run's claim once there is one.
    """

    def __init__(self, store: RedisJobStore, claimed_run: Callable[[], RunClaim | None], job_id: str) -> None:
        self._store = store
        self._claimed_run = claimed_run
        self._job_id = job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        interval = self._store.lease_seconds / 3
        # A refused renewal (cancelled, or taken over) is harmless: the run's next write finds
        # the job no longer its own and ends the run, and the keeping with it.
        while not self._stop.wait(interval):
            if (run := self._claimed_run()) is None:
                continue  # not claimed yet
            try:
                self._store.renew_lease(run)
            except self._store.outage_errors as error:  # expected during an outage: no traceback
                logger.warning("job %s: lease renewal failed, the job store cannot be reached (%s: %s); retrying",
                               self._job_id, type(error).__name__, error)
            except redis.RedisError:
                logger.warning("job %s: lease renewal failed; retrying", self._job_id, exc_info=True)

