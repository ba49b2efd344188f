"""The RQ worker class: what it changes of RQ's own, checked against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

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
