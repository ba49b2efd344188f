"""The RQ worker class: what it changes of RQ's own, checked against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import rq.worker.base as rq_worker_module

from fakes.redis_server import RedisServer
from videodag_service.jobs.rq_task import VideodagWorker


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def test_a_worker_stops_listening_for_commands_within_seconds(redis_server: RedisServer) -> None:
    """RQ's listener sleeps 60 s at a time, and stopping it waits for it: a worker told to stop
    could take a minute more to exit, past a supervisor's stop timeout."""
    worker = VideodagWorker(["videodag-test"], connection=redis.Redis.from_url(redis_server.url))
    for _ in range(5):  # whether stopping waits out a sleep depends on a race: several tries
        worker.subscribe()
        time.sleep(0.05)
        started = time.monotonic()
        worker.unsubscribe()
        stopped_in = time.monotonic() - started
        assert not worker.pubsub_thread.is_alive()
        assert stopped_in < 5, f"the listener took {stopped_in:.1f} s to stop"
    assert worker.pubsub_thread.sleep_time <= 1, "it wakes at least every second"


def test_an_idle_worker_tries_a_lost_redis_again_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ doubles its wait up to 60 s: after an outage of a minute, idle workers slept up to a
    minute more while the jobs queued again waited."""
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

    monkeypatch.setattr(rq_worker_module.time, "sleep", sleep)
    with pytest.raises(_Enough):
        worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert waits[0] == 1 and max(waits) == 5, waits
