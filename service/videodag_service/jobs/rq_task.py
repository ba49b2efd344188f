"""The worker side of the Redis backend: the function RQ workers run, and a worker class.

Start workers on any machine that reaches Redis and sees the shared upload directory at the
same path:

    rq worker --url redis://HOST:6379/0 --serializer json \\
        --worker-class videodag_service.jobs.rq_task.VideodagWorker videodag-jobs

`--serializer json` matches the server's (job arguments are plain JSON: a job id, an attempt
number and this module's `WorkerConfig`; never video bytes or frames). `VideodagWorker` is
RQ's forking worker with the video and DAG modules imported once in the parent, so each job's
forked work horse starts without importing OpenCV again.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import multiprocessing.util
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import redis
import rq

from videodag_service.dag import BUILTIN_PIPELINE_DIR, DagPipelineService
from videodag_service.jobs.execution import JobExecutor
from videodag_service.jobs.model import JobError, JobState
from videodag_service.jobs.redis_store import CONNECTION_TIMEOUTS, RedisJobStore
from videodag_service.jobs.uploads import DirectoryUploadStorage
from videodag_service.video import (
    DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS,
    DEFAULT_DECODE_RUN_TIMEOUT_SECONDS,
    Isolation,
    VideoFilePipelineService,
    VideoLimits,
)

logger = logging.getLogger(__name__)

RUN_JOB = f"{__name__}.run_job"


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
    # Defaults: a job queued by a server from before these settings still runs.
    decode_isolation: Isolation = "process"
    decode_frame_timeout_seconds: float | None = DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS
    decode_run_timeout_seconds: float | None = DEFAULT_DECODE_RUN_TIMEOUT_SECONDS
    node_timeout_seconds: float | None = None
    frame_workers: int | None = None
    max_result_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> WorkerConfig:
        """The config a server queued, without the settings this worker does not know.

        During a rolling upgrade a worker of the release before gets configs from newer
        servers: refusing them would leave every job they queue QUEUED until the worker is
        replaced, where running it under the worker's own behaviour for the new setting is
        what the worker did for every job before.
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


# What RQ's worker raises when Redis is out of reach: the same as the job store (a restart, a failover, a partition).
_REDIS_OUTAGE = RedisJobStore.outage_errors
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LISTENER_SLEEP_SECONDS = 1.0


class VideodagWorker(rq.Worker):
    """RQ's worker, loaded with videodag's modules before it forks work horses.

    RQ's worker quits on a Redis error anywhere but in its wait for the next job: an outage
    while a job ran (its heartbeats every `--job-monitoring-interval`) left the job's work horse
    orphaned and the queue without this worker. A running job waits out a short outage
    (`JobExecutor`), so its worker does too: the worker's own bookkeeping (heartbeats, state,
    the ended job's status, suspension checks, maintenance) is skipped while Redis is out, and
    RQ's wait for the next job already retries until it is back.
    """

    _worker_pid: int | None = None
    # RQ's wait for the next job retries a lost Redis at 1, 2, 4... s, up to 60 s apart: after an
    # outage of a minute, every idle worker slept up to a minute more while jobs queued again.
    max_connection_wait_time = 5.0

    def main_work_horse(self, *args: Any, **kwargs: Any) -> None:
        # A horse whose worker died (OOM killer, kill -9) would run its job on unsupervised:
        # past RQ's job timeout, and writing the dead worker's record back into Redis with no
        # expiry. It dies with the worker instead, and its job runs again once its lease ends.
        _die_with(self._worker_pid if self._worker_pid is not None else os.getppid())
        super().main_work_horse(*args, **kwargs)

    def execute_job(self, *args: Any, **kwargs: Any) -> None:
        # A work horse starts its own forkserver for its decoders, and multiprocessing puts the
        # forkserver's socket in the process's temp folder: one new /tmp/pymp-* folder a job,
        # since RQ ends a horse with os._exit, before multiprocessing can remove it. Made here
        # first, the folder is the worker's (removed when it exits), each horse inherits it, and
        # what a horse left in it is removed once it has ended, however it ended.
        self._worker_pid = os.getpid()
        horses_folder = multiprocessing.util.get_temp_dir()
        # Made again if something removed it meanwhile (a /tmp cleaner, after days idle):
        # multiprocessing keeps its path, and a horse could start no decoder without it.
        with contextlib.suppress(OSError):  # a full disk: the horse's job fails and says why
            os.makedirs(horses_folder, mode=0o700, exist_ok=True)
        left_before = _entries(horses_folder)
        try:
            super().execute_job(*args, **kwargs)
        finally:
            for name in _entries(horses_folder) - left_before:
                _remove(os.path.join(horses_folder, name))

    def subscribe(self) -> None:
        # RQ's own, but for the listener's sleep: RQ's is 60 s, and redis-py (8) waits for the
        # listener thread when stopping it, so a worker told to stop (SIGTERM) could take up to
        # a minute more to exit, past a supervisor's stop timeout (Docker's is 10 s).
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=_LISTENER_SLEEP_SECONDS, daemon=True,
            exception_handler=getattr(self, "_pubsub_exception_handler", None),
        )

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # RQ's wait for the next job retries lost connections only. A failover ends it another
        # way: the demoted primary unblocks its blocking pop ("UNBLOCKED ... master -> replica?")
        # and refuses the next one (READONLY) until a primary is reached again; RQ let both end
        # the worker, whose teardown failed on the same replica. They are waited out here, on
        # fresh connections each time, so an address moved to the new primary is followed (the
        # idle ones only: the listener thread's is in use, and closing it under it fails it).
        wait_seconds = 1.0
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except redis.exceptions.ResponseError as error:
                if not _failover_refusal(error):
                    raise
                logger.warning("worker %s: Redis is failing over (%s: %s); waiting %.0f s for a primary",
                               self.name, type(error).__name__, error, wait_seconds)
            self.connection.connection_pool.disconnect(inuse_connections=False)
            time.sleep(wait_seconds)
            wait_seconds = min(wait_seconds * 2, self.max_connection_wait_time)

    def monitor_work_horse(self, *args: Any, **kwargs: Any) -> None:
        # Its Redis calls beyond the heartbeats come once the horse has ended (the job's status,
        # RQ's failure bookkeeping): skipped while Redis is out, the job's own state is in the store.
        self._through_outage("bookkeeping of the ended job", super().monitor_work_horse, *args, **kwargs)

    def maintain_heartbeats(self, *args: Any, **kwargs: Any) -> None:
        self._through_outage("heartbeat", super().maintain_heartbeats, *args, **kwargs)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._through_outage("heartbeat", super().heartbeat, *args, **kwargs)

    def set_state(self, *args: Any, **kwargs: Any) -> None:
        self._through_outage("state", super().set_state, *args, **kwargs)

    def check_for_suspension(self, *args: Any, **kwargs: Any) -> None:
        self._through_outage("suspension check", super().check_for_suspension, *args, **kwargs)

    def run_maintenance_tasks(self, *args: Any, **kwargs: Any) -> None:
        self._through_outage("maintenance", super().run_maintenance_tasks, *args, **kwargs)

    def register_death(self, *args: Any, **kwargs: Any) -> None:
        # A worker stopped (SIGTERM) while Redis is out or read-only exited 1 with a traceback, a
        # failure to its supervisor; its record expires by itself (RQ's worker TTL).
        self._through_outage("record of its exit", super().register_death, *args, **kwargs)

    def _through_outage(self, what: str, step: Any, *args: Any, **kwargs: Any) -> None:
        try:
            step(*args, **kwargs)
        except _REDIS_OUTAGE as error:
            logger.warning("worker %s: Redis is out of reach (%s: %s); its %s is skipped until it is back",
                           self.name, type(error).__name__, error, what)


def _failover_refusal(error: redis.exceptions.ResponseError) -> bool:
    """A refusal a Redis gives while it is a replica: it passes once a primary is reached."""
    return isinstance(error, redis.exceptions.ReadOnlyError) or str(error).startswith("UNBLOCKED")


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when `parent`, the process that forked it, ends
    (Linux; elsewhere nothing). Its pid is taken before the fork: read after it, it could
    already be the reaper's, had the parent died meanwhile."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as error:
        logger.warning("a work horse cannot be tied to its worker's life: %s", error)
        return
    if os.getppid() != parent:  # the worker died before the request was made
        os._exit(1)


def _entries(folder: str) -> set[str]:
    """The names in `folder`; none if it cannot be read (nothing of a horse's to remove then)."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _remove(path: str) -> None:
    """Remove a file, socket or folder, if it is still there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run_job(job_id: str, attempt: int, config: dict[str, Any]) -> str | None:
    """Run one attempt of a job; returns the state it left (RQ keeps it only briefly)."""
    worker_config = WorkerConfig.from_json(config)
    current = rq.get_current_job()
    if current is None:
        raise RuntimeError("run_job runs inside an RQ worker only")
    connection = _decoding_connection(current.connection)
    store = RedisJobStore(connection, key_prefix=worker_config.key_prefix, lease_seconds=worker_config.lease_seconds)
    try:
        _dag(worker_config)
    except Exception as error:
        try:
            return _fail_unrunnable(store, worker_config, job_id, attempt,
                                    f"the worker that took the job cannot load its pipelines: {error}")
        finally:
            store.close()
    try:
        executor = _executor(store, worker_config)
    except Exception as error:
        try:
            return _fail_unrunnable(store, worker_config, job_id, attempt,
                                    f"the worker that took the job cannot set up its run: {type(error).__name__}: "
                                    f"{error}")
        finally:
            store.close()
    try:
        with _LeaseKeeper(store, job_id, attempt):
            state = executor.execute(job_id, attempt)
    finally:
        store.close()
    return None if state is None else state.value


def _executor(store: RedisJobStore, worker_config: WorkerConfig) -> JobExecutor:
    return JobExecutor(
        store,
        DirectoryUploadStorage(worker_config.upload_dir),
        _dag(worker_config),
        VideoFilePipelineService(
            _dag(worker_config),
            limits=VideoLimits(**worker_config.video_limits),
            isolation=worker_config.decode_isolation,
            decode_frame_timeout_seconds=worker_config.decode_frame_timeout_seconds,
            decode_run_timeout_seconds=worker_config.decode_run_timeout_seconds,
        ),
        job_timeout_seconds=worker_config.job_timeout_seconds,
        retention_seconds=worker_config.retention_seconds,
    )


def _fail_unrunnable(store: RedisJobStore, worker_config: WorkerConfig, job_id: str, attempt: int,
                     message: str) -> str | None:
    """Fail a job this worker cannot run at all: its pipelines do not load (a shared pipeline
    folder edited into an invalid one, one missing on this machine, a worker of another
    release), or its decoders or upload folder cannot be set up. RQ would file the task as
    failed and the job stay QUEUED for good, its watches waiting with it, since recovery looks
    after RUNNING jobs only."""
    now = time.time()
    job = store.claim(job_id, attempt, now)
    if job is None:
        return None
    logger.error("job %s failed: %s", job_id, message)
    store.finish(job_id, attempt, now, now + worker_config.retention_seconds,
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
    """RQ needs raw bytes from Redis, the job store needs str: same server, second pool, with
    the store's own timeouts (RQ's are minutes long, for its blocking dequeue)."""
    pool = connection.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": True, **CONNECTION_TIMEOUTS}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class _LeaseKeeper:
    """Renews the job's lease from a thread, so a long frame cannot make the job look abandoned.

    Results also renew it; this covers the time before the first frame (opening the video,
    loading models) and pipelines slower than the lease.
    """

    def __init__(self, store: RedisJobStore, job_id: str, attempt: int) -> None:
        self._store = store
        self._job_id = job_id
        self._attempt = attempt
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
        # A refused renewal (not claimed yet, or cancelled) is harmless: keep going until the
        # run ends, so a renewal that races the claim does not end the keeping.
        while not self._stop.wait(interval):
            try:
                self._store.renew_lease(self._job_id, self._attempt)
            except self._store.outage_errors as error:  # expected during an outage: no traceback
                logger.warning("job %s: lease renewal failed, the job store cannot be reached (%s: %s); retrying",
                               self._job_id, type(error).__name__, error)
            except redis.RedisError:
                logger.warning("job %s: lease renewal failed; retrying", self._job_id, exc_info=True)

