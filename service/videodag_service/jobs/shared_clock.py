"""The time every process of a Redis deployment goes by: Redis's own clock.

Replicas and workers run on different machines, and their wall clocks differ (a host whose NTP
is off, a VM after a suspend) or jump (an NTP step). A worker wrote its lease's end by its own
clock and a replica judged it by another: a minute apart, every running job looked abandoned
at every maintenance, ran again three times and failed as if its workers had crashed; a watch
mark, a retention end or a hand-over time read the same way. Redis's TIME is one clock for all.

It is read every few seconds, and carried forward in between by this process's monotonic clock,
which no step of the wall clock moves: one round trip per process every few seconds, none per
job write. Until Redis has answered once (an outage at start), this machine's wall clock stands in.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

logger = logging.getLogger(__name__)

_READ_AGAIN_SECONDS = 10.0


class RedisClock:
    """Seconds since the epoch by Redis's clock; `connection` may return str or bytes.

    A reading happens on the calling thread while the others carry on with the last one, and
    one that fails (Redis out of reach) is tried again only after the same few seconds: an
    outage costs a caller at most one wait for the connection, not one per call.
    """

    def __init__(self, connection: redis.Redis, read_again_seconds: float = _READ_AGAIN_SECONDS) -> None:
        self._redis = connection
        self._read_again_seconds = read_again_seconds
        self._lock = threading.Lock()
        self._reading = False
        self._next_reading = 0.0  # monotonic
        self._read_at: float | None = None  # monotonic time of the last reading
        self._redis_time = 0.0
        self._refusal_said = False

    def __call__(self) -> float:
        with self._lock:
            due = not self._reading and time.monotonic() >= self._next_reading
            self._reading = self._reading or due
        if due:
            try:
                self._read()
            finally:
                with self._lock:
                    self._reading = False
        with self._lock:
            if self._read_at is None:
                return time.time()
            return self._redis_time + (time.monotonic() - self._read_at)

    def _read(self) -> None:
        asked_at = time.monotonic()
        try:
            seconds, microseconds = self._redis.time()
        except redis.RedisError as error:
            if isinstance(error, redis.exceptions.NoPermissionError) and not self._refusal_said:
                self._refusal_said = True
                logger.warning("this process goes by its own clock: its Redis user may not run TIME (%s); replicas "
                               "and workers whose clocks differ by more than a lease run their jobs again", error)
            with self._lock:
                self._next_reading = time.monotonic() + self._read_again_seconds
            return  # out of reach: the last reading carries on (or the wall clock, before any)
        answered_at = time.monotonic()
        with self._lock:
            # Redis read its clock about halfway through the round trip.
            self._redis_time = int(seconds) + int(microseconds) / 1e6 + (answered_at - asked_at) / 2
            self._read_at = answered_at
            self._next_reading = answered_at + self._read_again_seconds
