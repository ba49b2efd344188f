"""Ending a reflection stream that asks nothing for a while: `RequestsUntilIdle`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fakes.waiting import SilentCall, wait_until
from videodag_service.reflection_idle import WAIT_THREAD_NAME, RequestsUntilIdle


def waiting_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WAIT_THREAD_NAME]


def test_requests_pass_through_until_the_stream_is_quiet_for_the_limit() -> None:
    stream = SilentCall("list", "file")
    requests = RequestsUntilIdle(iter(stream), idle_seconds=0.3)
    try:
        assert [next(requests), next(requests)] == ["list", "file"]
        started = time.monotonic()
        with pytest.raises(StopIteration):
            next(requests)
        assert time.monotonic() - started >= 0.3
        assert requests.ended_idle
        with pytest.raises(StopIteration):  # and stays ended, without waiting again
            next(requests)
    finally:
        stream.end()
    assert wait_until(lambda: not waiting_threads()), "the call's end must end the thread still waiting"


def test_a_stream_its_client_closes_ends_without_being_idle() -> None:
    requests = RequestsUntilIdle(iter(["list"]), idle_seconds=5)
    assert list(requests) == ["list"]
    assert not requests.ended_idle


def test_the_wait_for_each_request_starts_afresh() -> None:
    def paced() -> Iterator[int]:
        for index in range(8):
            time.sleep(0.2)  # well within the limit each time, 1.6 s in all: more than the limit
            yield index

    assert list(RequestsUntilIdle(paced(), idle_seconds=1.0)) == list(range(8))


def test_a_broken_stream_raises_its_error() -> None:
    """A cancelled call's request iterator raises: the servicer ends as it did without the limit."""

    def cancelled() -> Iterator[str]:
        yield "list"
        raise ConnectionAbortedError("cancelled")

    requests = RequestsUntilIdle(cancelled(), idle_seconds=5)
    assert next(requests) == "list"
    with pytest.raises(ConnectionAbortedError):
        next(requests)


def test_no_limit_reads_on_the_callers_thread() -> None:
    caller = threading.get_ident()

    def on_which_thread() -> Iterator[int]:
        yield threading.get_ident()

    assert list(RequestsUntilIdle(on_which_thread(), idle_seconds=0)) == [caller]
