"""Choose and assemble a job backend from configuration: embedded (default) or Redis + RQ.

The Redis modules (and so the `redis` and `rq` packages) are imported only when the Redis
backend is selected, so the embedded default needs neither installed.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videodag_service.dag import DagPipelineService
from videodag_service.disk_space import MIB, free_bytes, free_bytes_for_this_process, free_inodes, out_of_inodes
from videodag_service.errors import DiskFull
from videodag_service.jobs.data_dir_lock import SharedDataDirectoryHold
from videodag_service.jobs.defaults import (
    DEFAULT_JOB_TIMEOUT_SECONDS,
    DEFAULT_KEY_PREFIX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUED_JOBS,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_QUEUE_NAME,
    DEFAULT_REDIS_URL,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_WORKERS,
    MAX_MAINTENANCE_INTERVAL_SECONDS,
)
from videodag_service.jobs.dispatch import JobQueue, ThreadPoolJobQueue
from videodag_service.jobs.execution import JobExecutor, JobObserverRelay
from videodag_service.jobs.ids import is_job_id
from videodag_service.jobs.redis_urls import redis_reason_without_secrets, shown_redis_url
from videodag_service.jobs.service import JobService
from videodag_service.jobs.sqlite_store import SqliteJobStore
from videodag_service.jobs.store import JobStore
from videodag_service.jobs.stray_videos import remove_stray_videos
from videodag_service.jobs.uploads import DirectoryUploadStorage
from videodag_service.private_folders import mode_open_to_others, private_directory, refuse_unless_writable
from videodag_service.video import (
    DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS,
    DEFAULT_DECODE_RUN_TIMEOUT_SECONDS,
    Isolation,
    VideoFilePipelineService,
    VideoLimits,
)

logger = logging.getLogger(__name__)
# Less free than this, and a database error at start is taken for a full disk: SQLite needs a
# few pages and a 32 KiB shared-memory file to open a database.
_FULL_DISK_BYTES = 1 * MIB
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # out of bytes or of inodes


class JobBackend(enum.Enum):
    """Where jobs live and who runs them."""

    EMBEDDED = "embedded"
    """SQLite under the data directory and a pool of worker threads in the server process."""
    REDIS = "redis"
    """Redis shared by any number of server replicas; RQ workers run the jobs."""


@dataclass(frozen=True)
class JobConfig:
    """Everything a job backend needs; a server fills it from its settings."""

    data_dir: Path
    """Embedded: the SQLite database and uploads. Redis: the uploads only, which must be a
    directory every worker sees at the same path."""
    max_upload_bytes: int
    """Largest video accepted, as for a synchronous run."""
    backend: JobBackend = JobBackend.EMBEDDED
    redis_url: str = DEFAULT_REDIS_URL
    """Redis backend only."""
    workers: int = DEFAULT_WORKERS
    """Embedded only: jobs run at once. With Redis, start as many RQ workers as wanted."""
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    """How long a finished job, its results and files are kept."""
    job_timeout_seconds: float = DEFAULT_JOB_TIMEOUT_SECONDS
    """The longest a job may run; past it, it FAILS with DEADLINE_EXCEEDED."""
    video_limits: VideoLimits = field(default_factory=VideoLimits)
    decode_isolation: Isolation = "process"
    """Where videos are decoded: a decoder process per job (crash and hang proof) or a thread."""
    decode_frame_timeout_seconds: float | None = DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS
    decode_run_timeout_seconds: float | None = DEFAULT_DECODE_RUN_TIMEOUT_SECONDS
    node_timeout_seconds: float | None = None
    """Redis backend: the workers' limit on one node call (embedded jobs share the server's pipelines)."""
    frame_workers: int | None = None
    """Redis backend: frames a job's frame-independent nodes take at once; None: one per core of the worker."""
    max_result_bytes: int | None = None
    """Redis backend: the most a frame's result may take as sent; None: no limit."""
    pipeline_dir: Path | None = None
    """Where workers load pipelines from; None for the built-in ones."""
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    """Room SubmitJob's uploads must leave on the data directory's disk for the jobs' results and
    records (`--job-min-free-bytes`), or they are RESOURCE_EXHAUSTED (DISK_FULL); 0: no check."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Runs an interrupted job gets before it is FAILED."""
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS
    """Jobs waiting for a worker past which SubmitJob refuses new ones (TOO_MANY_QUEUED_JOBS); 0: no cap."""
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    """Redis backend: how long a silent worker keeps its job before it is run again."""
    key_prefix: str = DEFAULT_KEY_PREFIX
    """Redis backend: prefix of every key, so several deployments can share one Redis."""
    queue_name: str = DEFAULT_QUEUE_NAME
    """Redis backend: the RQ queue workers listen on."""

    @property
    def maintenance_interval_seconds(self) -> float:
        """How often retention and recovery run: a fraction of the shorter of retention and
        lease, so neither lags by more than a quarter of itself, and at least every
        `MAX_MAINTENANCE_INTERVAL_SECONDS`."""
        return min(MAX_MAINTENANCE_INTERVAL_SECONDS, max(0.05, min(self.retention_seconds, self.lease_seconds) / 4))


class DataDirectoryFull(RuntimeError):
    """Raised at start when the data directory's disk has no room left for the job database."""


class JobStoreUnusable(RuntimeError):
    """Raised at start when the job store cannot be used: a job database SQLite refuses, a Redis
    out of reach or refusing the server's password."""




def open_job_service(config: JobConfig, dag: DagPipelineService) -> JobService:
    """Assemble and start the configured backend; close the returned service to stop it.

    The data directory and its uploads folder are created private (0700); one that exists
    already and is open to others keeps its mode, with a warning. `JobService.observe` points
    the service's metrics (uploads; runs and frames of embedded jobs) at the server's.
    """
    if (warning := data_dir_open_to_others(config.data_dir)) is not None:
        logger.warning(warning)
    private_directory(config.data_dir, "job data folder (--data-dir)")
    refuse_unless_writable(config.data_dir, "job data folder (--data-dir)")
    observer = JobObserverRelay()
    free = _free_bytes_or_none(config.data_dir)
    if config.backend is JobBackend.REDIS:
        _warn_if_under_the_reserve(config, free)
        hold = SharedDataDirectoryHold(config.data_dir)
        try:
            # Replicas share the uploads folder: another may be receiving into it right now.
            return _redis_service(config, dag, _upload_storage(config, exclusive=False), observer, hold)
        except BaseException:
            hold.release()
            raise
    if _no_room_left(config.data_dir):
        # After a crash SQLite opens all the same (its log file is there already), and the jobs
        # it recovers would fail at their first result for good: refused as a new database is.
        raise _data_directory_full(config.data_dir, free)
    _warn_if_under_the_reserve(config, free)
    with _database_errors_stop_the_start(config.data_dir):
        return _embedded_service(config, dag, observer)


def _warn_if_under_the_reserve(config: JobConfig, free: int | None) -> None:
    """Every SubmitJob is refused on a disk under the reserve: the operator hears it at start,
    not only from the callers."""
    if free is not None and config.min_free_bytes and free < config.min_free_bytes:
        logger.warning(
            "the disk of the job data directory %s has %d bytes free, less than the %d --job-min-free-bytes keeps "
            "free: every job submission is refused (DISK_FULL) until space is freed", config.data_dir, free,
            config.min_free_bytes,
        )


def _data_directory_full(data_dir: Path, free: int | None) -> DataDirectoryFull:
    """Both counts: a disk may have bytes free and no inode left, and then no file can be made."""
    try:
        inodes = f", {free_inodes(data_dir)} inodes"
    except OSError:
        inodes = ""
    return DataDirectoryFull(
        f"no space left on the disk of the job data directory {os.fspath(data_dir)} (--data-dir"
        f"{f', {free} bytes{inodes} free' if free is not None else ''}): the job database cannot be written; "
        f"free some space there or give another --data-dir"
    )


@contextlib.contextmanager
def _database_errors_stop_the_start(data_dir: Path) -> Iterator[None]:
    """The job database failing at start (its set-up, the recovery of interrupted jobs) stops the
    start with a message naming the folder, where it would otherwise be a traceback.

    A full disk shows as SQLite's "database or disk is full", or, for a database that exists
    already, as a "disk I/O error" (its shared-memory file cannot grow): the free space tells.
    """
    try:
        yield
    except (DiskFull, sqlite3.Error, OSError) as error:
        if isinstance(error, OSError) and error.errno not in _DISK_FULL_ERRNOS:
            raise
        free = _free_bytes_or_none(data_dir)
        if isinstance(error, DiskFull | OSError) or _no_room_left(data_dir):
            raise _data_directory_full(data_dir, free) from error
        raise JobStoreUnusable(
            f"the job database in {os.fspath(data_dir)} (--data-dir) cannot be used: {type(error).__name__}: {error}"
        ) from error


def _no_room_left(folder: Path) -> bool:
    """Whether `folder`'s disk is full: under `_FULL_DISK_BYTES` free, or not one inode left
    (bytes free then, but no file can be made: SQLite says only "unable to open database file").
    The bytes are those this process may write: a server run as root may write the blocks a file
    system keeps for root, and those count for it."""
    try:
        return free_bytes_for_this_process(folder) < _FULL_DISK_BYTES or out_of_inodes(folder)
    except OSError:
        return False


def _free_bytes_or_none(folder: Path) -> int | None:
    try:
        return free_bytes(folder)
    except OSError:
        return None


def _videos_without_any_job(store: SqliteJobStore, uploads: DirectoryUploadStorage, data_dir: Path) -> bool:
    """Whether the database holds no job beside videos, and says so: the database may not be the
    one they go with (restored without its log, jobs.sqlite3-wal, where a running server keeps
    its latest writes, or from an older copy), and the start leaves them to maintenance, a few
    minutes away, instead of deleting them at once. A crash before a first job's record, or a
    video whose deletion failed, leaves the same, and costs only that wait."""
    if store.list_jobs(1, None, ()).jobs:
        return False
    videos = sum(1 for ref in uploads.refs() if is_job_id(Path(ref).stem))  # an operator's `.keep` is no video
    if videos:
        logger.warning(
            "the job database in %s (--data-dir) holds no job, but its uploads folder holds %d video(s): a database "
            "restored without its log (jobs.sqlite3-wal), or from a copy older than the videos? They are kept for "
            "now; maintenance removes them as no job's in a few minutes: stop the server and restore the "
            "database that goes with them if so", os.fspath(data_dir), videos)
    return videos > 0


def _embedded_service(config: JobConfig, dag: DagPipelineService, observer: JobObserverRelay) -> JobService:
    """SQLite under the data directory and worker threads in this process."""
    # Locks the data directory: its uploads are this process's alone.
    store = SqliteJobStore(config.data_dir, results_keep_free_bytes=config.min_free_bytes // 2)
    uploads: DirectoryUploadStorage | None = None
    video: VideoFilePipelineService | None = None
    try:
        uploads = _upload_storage(config, exclusive=True)
        # At start nothing of this folder runs, so no grace: a video whose job finished as the last
        # process ended (cancelled while it ran, then killed before its run stopped) would otherwise
        # stay for the job's whole retention, and one stored for a job never created for an hour more.
        if not _videos_without_any_job(store, uploads, config.data_dir) and (
            removed := remove_stray_videos(store, uploads)
        ):
            logger.info("removed %d video(s) of finished or unknown jobs left by the last process", removed)
        video = VideoFilePipelineService(
            dag,
            limits=config.video_limits,
            isolation=config.decode_isolation,
            decode_frame_timeout_seconds=config.decode_frame_timeout_seconds,
            decode_run_timeout_seconds=config.decode_run_timeout_seconds,
        )
        executor = JobExecutor(
            store,
            uploads,
            dag,
            video,
            job_timeout_seconds=config.job_timeout_seconds,
            retention_seconds=config.retention_seconds,
            observer=observer,
            max_attempts=config.max_attempts,
        )
        workers = ThreadPoolJobQueue(executor, config.workers, store.count_queued)
    except BaseException:
        # Decoders that cannot start, or a second signal while they start: a database holding no
        # job goes, with the uploads folders if empty (this start made them).
        if video is not None:
            video.close()
        store.close_and_discard(also=uploads.remove_if_empty if uploads is not None else lambda: None)
        raise
    return _started(config, store, workers, uploads, dag, observer)


def data_dir_open_to_others(data_dir: Path) -> str | None:
    """Why an existing data directory is not private, or None when it is (or does not exist yet).

    It holds the uploaded videos and, for the embedded backend, every job's results, file
    names, checksums and idempotency keys. What the server creates in it is private (folders
    0700, files 0600), but a folder the operator made keeps its mode: the server must not
    tighten a folder others may rely on. Files someone else put there may be readable by
    others, and anyone can list them; worth a warning.
    """
    mode = mode_open_to_others(data_dir)
    if mode is None:
        return None
    return (
        f"job data directory {os.fspath(data_dir)} is open to other users (mode {mode:04o}): it holds the jobs' "
        f"videos and results, file names and idempotency keys; give the server a folder of its own (chmod 700)"
    )


def _upload_storage(config: JobConfig, *, exclusive: bool) -> DirectoryUploadStorage:
    """The uploads folder; `exclusive` when no other process can be receiving uploads into it."""
    return DirectoryUploadStorage(
        config.data_dir / "uploads", min_free_bytes=config.min_free_bytes, exclusive=exclusive
    )



def _redis_service(
    config: JobConfig,
    dag: DagPipelineService,
    uploads: DirectoryUploadStorage,
    observer: JobObserverRelay,
    hold: SharedDataDirectoryHold,
) -> JobService:
    """Jobs in Redis, run by RQ workers: their runs and frames happen in the workers' processes,
    out of reach of the server's metrics; `observer` hears of the uploads only."""
    import redis

    from videodag_service.jobs.redis_store import CONNECTION_TIMEOUTS, RedisJobStore
    from videodag_service.jobs.rq_queue import RqJobQueue
    from videodag_service.jobs.rq_task import WorkerConfig

    try:
        commands = redis.Redis.from_url(config.redis_url, decode_responses=True, **CONNECTION_TIMEOUTS)
        queue_commands = redis.Redis.from_url(config.redis_url, **CONNECTION_TIMEOUTS)
    except ValueError as error:  # redis-py's word for a URL it cannot read (a scheme, a port)
        raise JobStoreUnusable(f"the job store's --redis-url {shown_redis_url(config.redis_url)!r} cannot be used: "
                               f"{redis_reason_without_secrets(str(error), config.redis_url)}") from error
    store = RedisJobStore(commands, key_prefix=config.key_prefix, lease_seconds=config.lease_seconds,
                          data_dir_hold=hold)
    worker_config = WorkerConfig(
        key_prefix=config.key_prefix,
        upload_dir=str(uploads.root.resolve()),
        pipeline_dir=str(config.pipeline_dir.resolve()) if config.pipeline_dir else None,
        job_timeout_seconds=config.job_timeout_seconds,
        retention_seconds=config.retention_seconds,
        lease_seconds=config.lease_seconds,
        video_limits=asdict(config.video_limits),
        decode_isolation=config.decode_isolation,
        decode_frame_timeout_seconds=config.decode_frame_timeout_seconds,
        decode_run_timeout_seconds=config.decode_run_timeout_seconds,
        node_timeout_seconds=config.node_timeout_seconds,
        frame_workers=config.frame_workers,
        max_result_bytes=config.max_result_bytes,
        max_attempts=config.max_attempts,
    )
    queue = RqJobQueue(
        queue_commands,
        worker_config,
        undispatched_key=store.undispatched_key,
        handed_over_key=store.handed_over_key,
        queue_name=config.queue_name,
        clock=store.clock,
    )
    try:
        return _started(config, store, queue, uploads, dag, observer)
    except redis.RedisError as error:  # out of reach, a password refused, not Redis at all: said without a traceback
        raise JobStoreUnusable(f"the job store (Redis) cannot be used: {type(error).__name__}: {error}") from error


def _started(
    config: JobConfig,
    store: JobStore,
    queue: JobQueue,
    uploads: DirectoryUploadStorage,
    dag: DagPipelineService,
    observer: JobObserverRelay,
) -> JobService:
    service = JobService(
        store,
        queue,
        uploads,
        dag,
        max_upload_bytes=config.max_upload_bytes,
        retention_seconds=config.retention_seconds,
        max_attempts=config.max_attempts,
        max_queued_jobs=config.max_queued_jobs,
        maintenance_interval_seconds=config.maintenance_interval_seconds,
        observer=observer,
    )
    try:
        return service.start()
    except BaseException:
        # Its workers stopped and the store closed: an embedded store's lock is released, so
        # the server's failed start ends cleanly and another may use the folder.
        service.close()
        raise
