"""`VideodagWorker`: RQ's forking worker, kept alive through Redis outages and failovers.

`videodag-worker` starts it; with `rq worker`, operators name it in `rq_task` (`--worker-class
videodag_service.jobs.rq_task.VideodagWorker`), which re-exports it: that name makes the
worker's parent process import the task module, and with it the video and DAG layers, once,
so each job's forked work horse starts without importing OpenCV again. Apart from the task
because it is about RQ's process and connection handling, not about running a job.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import logging
import multiprocessing.util
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, ParamSpec

import redis
import rq
import rq.exceptions
import rq.job
from rq.executions import Execution

from videodag_service.core_dumps import turn_off_core_dumps
from videodag_service.jobs.redis_store import RedisJobStore

logger = logging.getLogger(__name__)

_Arguments = ParamSpec("_Arguments")

# What RQ's worker raises when Redis is out of reach: the same as the job store (a restart, a failover, a partition).
_REDIS_OUTAGE = RedisJobStore.outage_errors
# Redis answered and said no (a password, an ACL): counted among the outages above by redis-py.
_REFUSALS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LISTENER_SLEEP_SECONDS = 1.0


class VideodagWorker(rq.Worker):
    """RQ's worker, loaded with videodag's modules before it forks work horses.

    RQ's worker quits on a Redis error anywhere but in its wait for the next job: an outage
    while a job runs (its heartbeats every `--job-monitoring-interval`) would leave the job's
    work horse orphaned and the queue without this worker. A running job waits out a short
    outage (`JobExecutor`), so its worker does too: the worker's own bookkeeping (heartbeats,
    state, the ended job's status, suspension checks, maintenance) is skipped while Redis is
    out, and RQ's wait for the next job already retries until it is back. Every method and
    attribute here but `_worker_pid`, `_through_outage` and `_record_is_of_a_dead_process`
    overrides RQ's own, of the same name (a test checks that RQ still has each).
    """

    _worker_pid: int | None = None
    # Stop signals (SIGTERM, SIGINT) that `videodag-worker` received before RQ's handlers were in place.
    stops_before_its_handlers: list[int] | None = None
    # RQ's wait for the next job retries a lost Redis at 1, 2, 4... s, up to 60 s apart: after an
    # outage of a minute, every idle worker would sleep up to a minute more while jobs queue again.
    max_connection_wait_time = 5.0

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        # RQ's start records the worker's birth and subscribes to its commands: an outage there
        # ended the worker before it took a job. It is waited out as the wait for the next job
        # is, on fresh connections.
        wait_seconds = 1.0
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                return
            except _REFUSALS:
                raise
            except _REDIS_OUTAGE as error:
                logger.warning("worker %s: Redis is out of reach (%s: %s) as the worker starts; trying again in %.0f s",
                               self.name, type(error).__name__, error, wait_seconds)
            if self.pubsub is not None and self.pubsub_thread is None:  # a subscription that failed
                with contextlib.suppress(*_REDIS_OUTAGE):
                    self.pubsub.close()
                self.pubsub = None
            self.connection.connection_pool.disconnect(inuse_connections=False)
            time.sleep(wait_seconds)
            wait_seconds = min(wait_seconds * 2, self.max_connection_wait_time)

    def _install_signal_handlers(self) -> None:
        # A stop signal before RQ's handlers raises in the worker's start to end it; one landing in
        # a finaliser (`__del__`), whose exceptions Python only prints, was lost, and the worker
        # worked the queue on, deaf to the one SIGTERM its supervisor sent. It is acted on here as
        # RQ acts on one while idle: the loop ends before it takes a job, and RQ's teardown runs.
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        if self.stops_before_its_handlers:
            received = signal.Signals(self.stops_before_its_handlers[-1]).name
            logger.info("worker %s: told to stop (%s) as it started; it stops before taking a job", self.name, received)
            self._shutdown_requested_date = datetime.datetime.now(datetime.UTC)
            self._stop_requested = True

    def register_birth(self) -> None:
        # RQ refuses to start a worker whose name a live worker's record holds. Two records are
        # this worker's own, not another's: a birth whose answer an outage took, recorded all the
        # same, and that of the process this one replaces under a fixed name (--name), killed
        # (kill -9, the out-of-memory killer) and restarted at once, which would be refused
        # until the record expired, minutes later.
        if self.birth_date is not None or self._record_is_of_a_dead_process():
            self.connection.delete(self.key)
        super().register_birth()  # type: ignore[no-untyped-call]

    def _record_is_of_a_dead_process(self) -> bool:
        """Whether this worker's name is held by a worker on this host whose process is gone
        (or has this process's id: a container's restarted worker often gets the same one)."""
        record = self.connection.hmget(self.key, ["hostname", "pid", "death"])
        hostname, pid, death = (value.decode() if isinstance(value, bytes) else value for value in record)
        if hostname != socket.gethostname() or death is not None or pid is None or not pid.isdigit():
            return False
        return int(pid) == os.getpid() or not _process_exists(int(pid))

    def main_work_horse(self, *args: Any, **kwargs: Any) -> None:
        # A horse whose worker died (OOM killer, kill -9) would run its job on unsupervised:
        # past RQ's job timeout, and writing the dead worker's record back into Redis with no
        # expiry. It dies with the worker instead, and its job runs again once its lease ends.
        _die_with(self._worker_pid if self._worker_pid is not None else os.getppid())
        turn_off_core_dumps()
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
        # RQ declares the attribute as its initial None (its own subscribe assigns a thread the same way).
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=_LISTENER_SLEEP_SECONDS, daemon=True,
            exception_handler=getattr(self, "_pubsub_exception_handler", None),
        )

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # RQ's wait for the next job retries lost connections only. A failover ends it another
        # way: the demoted primary unblocks its blocking pop ("UNBLOCKED ... master -> replica?")
        # and refuses the next one (READONLY) until a primary is reached again; RQ lets both end
        # the worker, whose teardown fails on the same replica. They are waited out here, on
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

    def prepare_execution(self, job: rq.job.Job) -> Execution:
        # RQ records a task's start (its execution, in the started registry) as the worker takes
        # it from the queue: an outage there ended the worker, the task left in RQ's intermediate
        # list. It is waited out here as the wait for the next job is, on fresh connections (an
        # address moved to a new primary is followed). A start whose answer the outage took may
        # still be applied once Redis is back: removed once a new one is made. Told to stop
        # meanwhile (SIGTERM), the worker leaves the task to recovery, which hands it over again.
        wait_seconds = 1.0
        unconfirmed: list[Execution] = []
        while True:
            before = set(self.executions)
            try:
                execution = super().prepare_execution(job)
                break
            except _REDIS_OUTAGE as error:
                unconfirmed += [self.executions.pop(key) for key in set(self.executions) - before]
                logger.warning("worker %s: Redis is out of reach (%s: %s) as it starts task %s; trying again in %.0f s",
                               self.name, type(error).__name__, error, job.id, wait_seconds)
            self.connection.connection_pool.disconnect(inuse_connections=False)
            time.sleep(wait_seconds)
            wait_seconds = min(wait_seconds * 2, self.max_connection_wait_time)
            if self._stop_requested:
                logger.warning("worker %s: told to stop while Redis is out of reach; task %s is left for recovery to "
                               "hand over again", self.name, job.id)
                raise rq.exceptions.StopRequested
        if unconfirmed:
            self._through_outage("removal of its unconfirmed start of the task", _delete_executions,
                                 self.connection, job, unconfirmed)
        return execution

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

    def set_shutdown_requested_date(self, *args: Any, **kwargs: Any) -> None:
        # Called by RQ's SIGTERM handler while a task is under way: raised from the handler, an
        # outage ended the worker's supervision of a running job's horse (which then died with it).
        self._through_outage("record of its stop request", super().set_shutdown_requested_date, *args, **kwargs)

    def register_death(self, *args: Any, **kwargs: Any) -> None:
        # A worker stopped (SIGTERM) while Redis is out or read-only would exit 1 with a traceback,
        # a failure to its supervisor; its record expires by itself (RQ's worker TTL).
        self._through_outage("record of its exit", super().register_death, *args, **kwargs)

    def unsubscribe(self) -> None:
        # RQ's sends UNSUBSCRIBE before it stops the listener: a worker stopped (SIGTERM) after
        # an outage in its life exited 1 with a traceback, its listener left running. Closing the
        # connection ends the subscription as well, on a Redis that is back or not.
        try:
            super().unsubscribe()  # type: ignore[no-untyped-call]  # RQ leaves it unannotated
        except _REDIS_OUTAGE as error:
            logger.warning("worker %s: Redis is out of reach (%s: %s); it stops listening without unsubscribing",
                           self.name, type(error).__name__, error)
            self._stop_listening()

    def _stop_listening(self) -> None:
        listener, self.pubsub_thread = self.pubsub_thread, None
        if listener is not None:
            try:
                listener.stop(timeout=_LISTENER_SLEEP_SECONDS)  # redis-py 8 waits for the thread this long
            except TypeError:  # redis-py 5 to 7: stop() takes no timeout and does not wait
                listener.stop()
        if self.pubsub is not None:
            with contextlib.suppress(*_REDIS_OUTAGE):
                self.pubsub.close()

    def _through_outage(
        self, what: str, step: Callable[_Arguments, object], *args: _Arguments.args, **kwargs: _Arguments.kwargs
    ) -> None:
        try:
            step(*args, **kwargs)
        except _REDIS_OUTAGE as error:
            logger.warning("worker %s: Redis is out of reach (%s: %s); its %s is skipped until it is back",
                           self.name, type(error).__name__, error, what)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _delete_executions(connection: redis.Redis, job: rq.job.Job, executions: list[Execution]) -> None:
    with connection.pipeline() as pipe:
        for execution in executions:
            execution.delete(job=job, pipeline=pipe)
        pipe.execute()


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
