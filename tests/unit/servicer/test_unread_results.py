"""A call whose client takes no result for too long is cancelled; one that reads, or waits on the server, is not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from fakes.servicer_context import CallAborted, FakeServicerContext
from fakes.thread_limits import no_new_threads
from fakes.waiting import wait_until
from videodag_service.unread_results import WATCHDOG_THREAD_NAME, UnreadResultsWatchdog


def _responses(closed: list[bool]) -> Iterator[int]:
    try:
        yield from range(3)
    finally:
        closed.append(True)


def test_a_call_suspended_in_a_send_past_the_limit_is_cancelled_once_and_a_finished_one_never() -> None:
    watchdog = UnreadResultsWatchdog(limit_seconds=5.0)
    stalled, finished = FakeServicerContext(), FakeServicerContext()
    stalled_closed: list[bool] = []
    stalled_stream = watchdog.watching(_responses(stalled_closed), stalled)
    assert next(stalled_stream) == 0  # gRPC is sending it: suspended from now on
    assert list(watchdog.watching(_responses([]), finished)) == [0, 1, 2]

    now = time.monotonic()
    watchdog.cancel_stalled(now + 4.0)
    assert stalled.cancels == 0
    watchdog.cancel_stalled(now + 6.0)
    watchdog.cancel_stalled(now + 7.0)
    assert (stalled.cancels, finished.cancels) == (1, 0)

    stalled_stream.close()  # what gRPC does once the call is cancelled
    assert stalled_closed == [True]
    watchdog.cancel_stalled(now + 100.0)
    assert stalled.cancels == 1


def test_time_the_server_spends_between_results_does_not_count() -> None:
    watchdog = UnreadResultsWatchdog(limit_seconds=1.0)
    context = FakeServicerContext()

    def slow_server() -> Iterator[int]:
        yield 0
        watchdog.cancel_stalled(time.monotonic() + 60.0)  # a minute of work between two results
        yield 1

    assert list(watchdog.watching(slow_server(), context)) == [0, 1]
    assert context.cancels == 0


def test_zero_turns_it_off() -> None:
    watchdog = UnreadResultsWatchdog(limit_seconds=0)
    context = FakeServicerContext()
    stream = watchdog.watching(iter([1, 2]), context)
    assert next(stream) == 1
    watchdog.cancel_stalled(time.monotonic() + 3600.0)
    assert context.cancels == 0 and list(stream) == [2]


def test_the_watchdog_thread_lives_only_while_calls_are_watched() -> None:
    watchdog = UnreadResultsWatchdog(limit_seconds=60.0)

    def watchdog_threads() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == "videodag-unread-results"]

    assert wait_until(lambda: not watchdog_threads(), timeout=5)  # the earlier tests' watchdogs have gone
    first = watchdog.watching(iter([1, 2]), FakeServicerContext())
    second = watchdog.watching(iter([1]), FakeServicerContext())
    next(first)
    next(second)
    assert len(watchdog_threads()) == 1  # one for all calls
    assert list(second) == []
    assert len(watchdog_threads()) == 1  # a call still streams
    assert list(first) == [2]
    assert wait_until(lambda: not watchdog_threads(), timeout=5)
    again = watchdog.watching(iter([1]), FakeServicerContext())
    next(again)
    assert len(watchdog_threads()) == 1  # started again for the next call
    again.close()
    assert wait_until(lambda: not watchdog_threads(), timeout=5)


def test_a_call_whose_watch_meets_the_threads_limit_ends_unavailable_and_later_calls_are_watched() -> None:
    """The watchdog's thread failed to start (a pids limit) and was kept all the same: the call
    ended UNKNOWN "Exception iterating responses", and no call was watched again until a restart."""
    watchdog = UnreadResultsWatchdog(limit_seconds=0.2)
    refused = FakeServicerContext()
    with no_new_threads(WATCHDOG_THREAD_NAME), pytest.raises(CallAborted, match="ran out of threads"):
        next(watchdog.watching(_responses([]), refused))
    assert refused.code is grpc.StatusCode.UNAVAILABLE
    stalled = FakeServicerContext()
    stalled_stream = watchdog.watching(_responses([]), stalled)
    assert next(stalled_stream) == 0  # gRPC is sending it, and its client reads nothing
    assert wait_until(lambda: stalled.cancels == 1, timeout=10), "the next call is watched"
    stalled_stream.close()
