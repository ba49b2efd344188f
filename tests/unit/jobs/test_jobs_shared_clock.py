"""`RedisClock`: the one clock a Redis deployment's processes go by, against a real redis-server."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from fakes.redis_server import RedisServer, free_port
from videodag_service.jobs.shared_clock import RedisClock

_HOUR = 3600.0


class _CountedTime(redis.Redis):
    """A connection that counts its TIME commands."""

    readings = 0

    def time(self) -> tuple[int, int]:  # type: ignore[override]
        self.readings += 1
        return super().time()


def _redis_time(server: RedisServer) -> float:
    seconds, microseconds = server.client.time()
    return seconds + microseconds / 1e6


def test_it_keeps_redis_time_whatever_this_machines_wall_clock_says(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall_clock = time.time
    monkeypatch.setattr(time, "time", lambda: wall_clock() - _HOUR)  # this host an hour behind, or stepped back
    clock = RedisClock(redis.Redis.from_url(redis_server.url))
    assert abs(clock() - _redis_time(redis_server)) < 0.5


def test_between_readings_it_counts_on_by_the_monotonic_clock(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip every few seconds, not one per job write; a wall clock stepped meanwhile
    changes nothing."""
    connection = _CountedTime.from_url(redis_server.url)
    clock = RedisClock(connection, read_again_seconds=60)
    first = clock()
    wall_clock = time.time
    monkeypatch.setattr(time, "time", lambda: wall_clock() + _HOUR)
    time.sleep(0.3)
    second = clock()
    assert 0.25 < second - first < 60, "the sleep counted, not the wall clock's step of an hour"
    assert connection.readings == 1


def test_it_reads_redis_again_after_a_while(redis_server: RedisServer) -> None:
    connection = _CountedTime.from_url(redis_server.url)
    clock = RedisClock(connection, read_again_seconds=0.1)
    clock()
    time.sleep(0.2)
    clock()
    assert connection.readings == 2


def test_before_redis_has_answered_it_is_this_machines_wall_clock_and_asks_again_only_later() -> None:
    connection = _CountedTime(port=free_port(), socket_connect_timeout=1)
    clock = RedisClock(connection, read_again_seconds=60)
    assert abs(clock() - time.time()) < 0.5
    assert abs(clock() - time.time()) < 0.5
    assert connection.readings == 1, "an outage costs one wait a while, not one a call"


def test_a_redis_user_that_may_not_run_time_is_said_once_and_the_wall_clock_stands_in(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A restrictive ACL (`+@read +@write +@scripting ...`, without `@fast`) refuses TIME: each
    process then goes by its own clock, silently, and skewed hosts ran their jobs again."""
    redis_server.client.acl_setuser("no-time", enabled=True, passwords=["+secret"], keys=["*"],
                                    commands=["+@read", "+@write", "+@scripting", "+@connection"])
    connection = _CountedTime(host="127.0.0.1", port=redis_server.port, username="no-time", password="secret")
    clock = RedisClock(connection, read_again_seconds=0)
    with caplog.at_level(logging.WARNING, logger="videodag_service.jobs.shared_clock"):
        for _ in range(3):
            assert abs(clock() - time.time()) < 0.5
    assert connection.readings == 3
    assert [record.getMessage() for record in caplog.records] == [caplog.records[0].getMessage()]
    assert "its Redis user may not run TIME" in caplog.records[0].getMessage()
    redis_server.client.acl_deluser("no-time")
