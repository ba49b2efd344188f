"""The RQ worker class: what it changes of RQ's own, checked against a real redis-server."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import rq
import rq.exceptions
import rq.worker.base as rq_base

from fakes.redis_server import RedisServer, free_port
from videodag_service.jobs import Job, JobState, StoredVideo, rq_task
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.rq_task import WorkerConfig
from videodag_service.jobs.rq_worker import VideodagWorker
from videodag_service.video import SamplingOptions

# VideodagWorker's own, not RQ's.
_ADDED_TO_RQ = {"_worker_pid", "_through_outage", "_record_is_of_a_dead_process", "_stop_listening",
                "stops_before_its_handlers"}


def test_every_rq_worker_attribute_the_worker_class_overrides_is_rq_workers_own() -> None:
    """RQ's worker internals change between the releases allowed (rq>=2,<4): an override of a
    method RQ renamed would silently never be called."""
    overrides = {name for name in vars(VideodagWorker) if not name.startswith("__")} - _ADDED_TO_RQ
    assert "heartbeat" in overrides and "subscribe" in overrides
    assert sorted(name for name in overrides if not hasattr(rq.Worker, name)) == []


def test_the_worker_class_is_found_by_the_name_operators_give() -> None:
    """`rq worker --worker-class videodag_service.jobs.rq_task.VideodagWorker`, as the README says."""
    assert rq_task.VideodagWorker is VideodagWorker


def test_a_worker_stops_listening_for_commands_within_seconds(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's listener sleeps 60 s at a time, and stopping it waits for it: a worker told to stop
    could take a minute more to exit, past a supervisor's stop timeout."""
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(redis_server.url))
    control = redis.Redis.from_url(redis_server.url)
    handled = threading.Event()
    monkeypatch.setattr(worker, "handle_payload", lambda message: handled.set())
    for _ in range(3):  # whether stopping waits out a sleep depends on a race: several tries
        handled.clear()
        worker.subscribe()
        control.publish(worker.pubsub_channel_name, "{}")
        assert handled.wait(10), "the listener handles a command, then waits for the next"
        started = time.monotonic()
        worker.unsubscribe()
        stopped_in = time.monotonic() - started
        assert not worker.pubsub_thread.is_alive()
        assert stopped_in < 5, f"the listener took {stopped_in:.1f} s to stop"
    assert worker.pubsub_thread.sleep_time <= 1, "it wakes at least every second"
    control.close()


@pytest.mark.parametrize("stop_takes_a_timeout", [True, False], ids=["redis-py 8", "redis-py 5 to 7"])
def test_a_worker_whose_redis_went_away_stops_listening_without_unsubscribing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stop_takes_a_timeout: bool
) -> None:
    """RQ's teardown sends UNSUBSCRIBE before it stops the listener: with Redis gone that
    raised, the listener left running and the worker exiting 1 with a traceback."""
    lost = RedisServer(tmp_path)
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(lost.url, socket_connect_timeout=1))
    worker.subscribe()
    listener = worker.pubsub_thread
    if not stop_takes_a_timeout:  # as redis-py before 8: stop() clears the flag and returns
        monkeypatch.setattr(listener, "stop", lambda: listener._running.clear())
    lost.stop()
    worker.unsubscribe()
    listener.join(10)
    assert not listener.is_alive()
    assert worker.pubsub_thread is None
    assert "it stops listening without unsubscribing" in caplog.text


def test_an_idle_worker_tries_a_lost_redis_again_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ doubles its wait up to 60 s: after an outage of a minute, idle workers would sleep up
    to a minute more while the jobs queued again wait."""
    lost = RedisServer(tmp_path)
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(lost.url, socket_connect_timeout=1))
    lost.stop()
    waits: list[float] = []

    class _Enough(Exception):
        pass

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 12:
            raise _Enough

    monkeypatch.setattr(rq_base.time, "sleep", sleep)
    with pytest.raises(_Enough):
        worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert waits[0] == 1 and max(waits) == 5, waits


def test_a_worker_waits_out_an_outage_as_it_starts_a_task_and_keeps_one_record_of_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outage between taking a task from the queue and recording its start ended RQ's worker,
    the task left in RQ's intermediate list: its job stayed QUEUED until RQ's own cleanup,
    minutes later. The start sent as the outage began is applied when Redis is back: one record
    of the start must be left, the one the worker goes on with."""
    server = RedisServer(tmp_path)
    connection = redis.Redis.from_url(server.url)
    try:
        queue = rq.Queue("videodag-test", connection=connection)
        task = queue.enqueue(print, job_id="videodag-task")
        worker = VideodagWorker([queue], connection=redis.Redis.from_url(server.url))
        # RQ gives the worker's connection a socket timeout of minutes: a stall is seen sooner here.
        worker.connection = redis.Redis.from_url(server.url, socket_timeout=1.0)
        worker.connection.ping()  # an open connection: the start is sent as Redis stalls
        server.pause()
        resumed = threading.Timer(1.5, server.resume)
        resumed.start()
        try:
            execution = worker.prepare_execution(task)
        finally:
            resumed.join()
        assert "Redis is out of reach (TimeoutError: " in caplog.text
        assert list(worker.executions) == [execution.id]
        started = connection.zrange(queue.started_job_registry.key, 0, -1)
        assert started == [f"videodag-task:{execution.id}".encode()]
        assert connection.exists(execution.key)
    finally:
        connection.close()
        server.stop()


def test_a_worker_waits_out_an_outage_as_it_starts_and_listens_once_redis_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RQ's start records the worker's birth and subscribes to its commands: an outage then
    ended the worker before it took a job (a deployment started with its Redis)."""
    server = RedisServer(tmp_path)
    control = redis.Redis.from_url(server.url)
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(server.url))
    # RQ gives the worker's connection a socket timeout of minutes: a stall is seen sooner here.
    worker.connection = redis.Redis.from_url(server.url, socket_timeout=1.0)
    worker.connection.ping()
    server.pause()
    resumed = threading.Timer(1.5, server.resume)
    resumed.start()
    try:
        worker.bootstrap()
        assert "Redis is out of reach (TimeoutError: " in caplog.text
        assert "as the worker starts; trying again in 1 s" in caplog.text
        assert [found.name for found in rq.Worker.all(connection=control)] == [worker.name]
        assert worker.pubsub_thread is not None and worker.pubsub_thread.is_alive(), "it listens for commands"
    finally:
        resumed.join()
        worker.teardown()
        control.close()
        server.stop()


def test_a_worker_whose_recorded_birth_an_outage_hid_starts_all_the_same(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The birth is recorded, then the outage: RQ, trying again, took the record for another
    worker of the same name still alive, and refused to start."""
    control = redis.Redis.from_url(redis_server.url)
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(redis_server.url))
    subscriptions: list[str] = []
    subscribe = VideodagWorker.subscribe

    def lost_at_the_first_subscription(self: VideodagWorker) -> None:
        subscriptions.append(self.name)
        if len(subscriptions) == 1:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        subscribe(self)

    monkeypatch.setattr(VideodagWorker, "subscribe", lost_at_the_first_subscription)
    try:
        worker.bootstrap()
        assert len(subscriptions) == 2
        assert [found.name for found in rq.Worker.all(connection=control)] == [worker.name]
    finally:
        worker.teardown()
        control.close()


def test_a_worker_told_to_stop_before_rqs_handlers_were_in_place_stops_before_taking_a_job(
    redis_server: RedisServer,
) -> None:
    """A stop signal whose exception was lost in the worker's start (in a finaliser): the worker
    took the queued job and worked on, deaf to the one SIGTERM its supervisor had sent."""
    control = redis.Redis.from_url(redis_server.url)
    queue = rq.Queue("videodag-stopped-start", connection=control)
    queue.enqueue("builtins.len", "queued")
    worker = VideodagWorker([queue.name], connection=redis.Redis.from_url(redis_server.url))
    worker.stops_before_its_handlers = [signal.SIGTERM]
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        worked = worker.work(burst=True)
    finally:  # RQ's handlers are the test process's own now
        for number, handler in handlers.items():
            signal.signal(number, handler)
    try:
        assert not worked
        assert queue.count == 1, "the queued job is left for another worker"
        assert worker._shutdown_requested_date is not None, "videodag-worker exits 0 for a stop"
        assert worker.name not in [found.name for found in rq.Worker.all(connection=control)], "its record is dead"
    finally:
        queue.empty()
        control.close()


def test_a_worker_starting_a_task_in_a_failover_tries_again_on_a_new_connection(redis_server: RedisServer) -> None:
    """A demoted primary refuses the start (READONLY): tried again on the same connection, the
    worker would never reach the new primary that its Redis address now names."""
    control = redis.Redis.from_url(redis_server.url)
    queue = rq.Queue("videodag-failover", connection=control)
    task = queue.enqueue(print, job_id="videodag-failover-task")
    worker = VideodagWorker([queue], connection=redis.Redis.from_url(redis_server.url))
    demoted_connection = worker.connection.client_id()
    control.replicaof("127.0.0.1", free_port())
    promoted = threading.Timer(1.5, control.replicaof, args=("NO", "ONE"))
    promoted.start()
    try:
        execution = worker.prepare_execution(task)
    finally:
        promoted.join()
        control.replicaof("NO", "ONE")
    assert demoted_connection not in {int(client["id"]) for client in control.client_list()}
    assert control.exists(execution.key)
    control.close()


def test_a_worker_told_to_stop_while_it_waits_out_an_outage_to_start_a_task_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RQ's SIGTERM handler records the request in Redis: raised from the handler, the outage
    ended the worker with a traceback. The task is left for recovery to hand over again."""
    server = RedisServer(tmp_path)
    connection = redis.Redis.from_url(server.url)
    queue = rq.Queue("videodag-test", connection=connection)
    task = queue.enqueue(print, job_id="videodag-task")
    worker = VideodagWorker([queue], connection=redis.Redis.from_url(server.url, socket_connect_timeout=1))
    connection.close()
    server.stop()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    worker._install_signal_handlers()
    stop = threading.Timer(1.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    try:
        stop.start()
        started = time.monotonic()
        with pytest.raises(rq.exceptions.StopRequested):
            worker.prepare_execution(task)
        assert time.monotonic() - started < 15
    finally:
        stop.join()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert "told to stop while Redis is out of reach; task videodag-task is left for recovery" in caplog.text


def test_a_worker_told_to_stop_during_an_outage_still_waits_for_its_running_job(tmp_path: Path) -> None:
    """The stop request's record, raised from RQ's SIGTERM handler while Redis was out, ended the
    worker's watch of its work horse: the worker went, and the horse, which dies with it, took
    its job along, where a worker told to stop finishes its job."""
    server = RedisServer(tmp_path)
    connection = redis.Redis.from_url(server.url)
    queue = rq.Queue("videodag-test", connection=connection)
    task = queue.enqueue(print, job_id="videodag-task")
    worker = VideodagWorker([queue], connection=redis.Redis.from_url(server.url, socket_connect_timeout=1),
                            job_monitoring_interval=1)
    execution = worker.prepare_execution(task)
    connection.close()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    worker._install_signal_handlers()
    horse = os.fork()
    if horse == 0:  # the job's work horse, running on through the outage
        time.sleep(4)
        os._exit(0)
    worker._horse_pid = horse
    server.stop()
    # Half way between two of its heartbeats (a second apart), as the worker waits for the horse.
    stop = threading.Timer(1.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    try:
        stop.start()
        worker.monitor_work_horse(task, queue, execution)
        with pytest.raises(ChildProcessError):  # ended, and reaped by the worker's watch
            os.waitpid(horse, os.WNOHANG)
    finally:
        stop.join()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(horse, 0)


def test_a_job_whose_run_cannot_be_set_up_fails_saying_so_rather_than_staying_queued(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a pipeline folder that does not load: decoders that cannot start (a pids limit),
    or anything else before the run, would fail the task in RQ unclaimed, and recovery would hand
    the job over again until its attempts ran out, to give it up as vanished without saying why."""
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix="setup-test", lease_seconds=30)
    job = store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                           StoredVideo("v.mp4", 1, "0" * 64), 0.0))
    config = WorkerConfig(key_prefix="setup-test", upload_dir=str(tmp_path / "uploads"), pipeline_dir=None,
                          job_timeout_seconds=60, retention_seconds=60, lease_seconds=30, video_limits={})

    def decoders_that_cannot_start(*args: object, **kwargs: object) -> None:
        raise RuntimeError("decoder processes cannot start")

    monkeypatch.setattr(rq_task, "VideoFilePipelineService", decoders_that_cannot_start)
    monkeypatch.setattr(rq_task.rq, "get_current_job",
                        lambda: SimpleNamespace(connection=redis.Redis.from_url(redis_server.url)))

    assert rq_task.run_job(job.id, 1, config.to_json()) == "FAILED"
    failed = store.get(job.id)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error.message == ("the worker that took the job cannot set up its run: RuntimeError: decoder "
                                    "processes cannot start")
    store.close()


def test_the_lease_keeper_holds_the_lease_of_the_runs_claim_until_the_run_ends(redis_server: RedisServer) -> None:
    """It starts before the claim (made inside the run) and keeps a run that writes nothing for
    several leases (a long first frame) from being taken for a vanished one; once the run ends,
    a lease nobody renews runs out and recovery queues the job again."""
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix="lease-keeper", lease_seconds=0.6)
    job = store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                           StoredVideo("v.mp4", 1, "0" * 64), 0.0))
    claims: list[RunClaim] = []
    try:
        with rq_task._LeaseKeeper(store, lambda: claims[0] if claims else None, job.id):
            time.sleep(0.3)  # not claimed yet: nothing to renew
            claimed = store.claim(job.id, 1, time.time())
            assert claimed is not None
            claims.append(RunClaim.of(claimed))
            time.sleep(2.0)  # over three leases without a write of the run's
            assert store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60) == []
            assert store.get(job.id).state is JobState.RUNNING
        time.sleep(1.0)
        recovered = store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60)
        assert [(found.id, found.state, found.attempt) for found in recovered] == [(job.id, JobState.QUEUED, 2)]
    finally:
        store.close()


def test_a_work_horse_writes_no_core_dump(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A horse holds its job's frames and results: a crash's core dump would keep a copy of them
    wherever the machine keeps crash reports, past the job's deletion."""
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(redis_server.url))
    reading, writing = os.pipe()

    def rqs_own(*args: object, **kwargs: object) -> None:  # the horse's work, once videodag's set-up is done
        os.write(writing, str(resource.getrlimit(resource.RLIMIT_CORE)[0]).encode())

    monkeypatch.setattr(rq.Worker, "main_work_horse", rqs_own)
    pid = os.fork()
    if pid == 0:  # the horse
        try:
            resource.setrlimit(resource.RLIMIT_CORE, resource.getrlimit(resource.RLIMIT_CORE)[1:] * 2)
            worker.main_work_horse()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.close(writing)
    assert os.read(reading, 64) == b"0"
    os.close(reading)


def test_a_work_horse_that_cannot_ask_redis_whether_its_worker_stops_pauses_on_and_ends_its_pause_once_told(
    tmp_path: Path,
) -> None:
    """The horse's pause before a hand-over ends early when its worker was told to stop. A look
    at the worker's record Redis does not answer must not end the task, nor the pause."""
    server = RedisServer(tmp_path)
    control = redis.Redis.from_url(server.url)
    # The store's 5 s timeout: one look would outlast the pause.
    connection = redis.Redis.from_url(server.url, socket_timeout=0.2)
    worker_key = VideodagWorker.redis_worker_namespace_prefix + "videodag-test-worker"
    try:
        control.hset(worker_key, "birth", "2025-01-01T00:00:00.000000Z")
        server.pause()
        try:
            started = time.monotonic()
            assert rq_task._pause_unless_stopping(connection, "videodag-test-worker", 1.0) is False
            assert 1.0 <= time.monotonic() - started < 4.0, "the pause, and no look held past its timeout"
        finally:
            server.resume()

        stop = threading.Timer(0.5, control.hset, args=(worker_key, "shutdown_requested_date",
                                                          "2025-01-01T00:00:01.000000Z"))
        started = time.monotonic()
        stop.start()
        try:
            assert rq_task._pause_unless_stopping(connection, "videodag-test-worker", 30.0) is True
        finally:
            stop.join()
        assert time.monotonic() - started < 10.0, "ended by the stop, not at the 30 s pause's end"
    finally:
        connection.close()
        control.close()
        server.stop()
