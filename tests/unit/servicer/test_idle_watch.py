"""Reading a stream on a thread of its own, given up when it goes quiet: `idle_watch`, which uploads and
reflection streams share, raises an error of its own; only the upload path names the upload."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fakes.waiting import SilentCall
from videodag_service.errors import UploadIdle, VideodagError
from videodag_service.idle_watch import IdleTimeout, WatchedItems, run_watching_idle

THREAD_NAME = "test-idle-watch"


def test_a_quiet_stream_is_given_up_with_an_error_that_names_no_upload() -> None:
    call = SilentCall("first")
    ended_with: list[BaseException] = []
    work_done = threading.Event()

    def work(items: Iterator[str]) -> list[str]:
        try:
            return list(items)
        except BaseException as error:
            ended_with.append(error)
            raise
        finally:
            work_done.set()

    started = time.monotonic()
    with pytest.raises(IdleTimeout) as raised:
        run_watching_idle(work, WatchedItems(iter(call), 0.2), THREAD_NAME)
    assert time.monotonic() - started >= 0.2
    assert raised.value.idle_seconds == 0.2 and str(raised.value) == "nothing arrived for 0.2 s"
    assert not isinstance(raised.value, (UploadIdle, VideodagError))
    call.end()  # the given-up call ends: the work stops with the same error, not with the cut-off stream
    assert work_done.wait(5)
    assert ended_with == [raised.value]


def test_the_works_result_and_its_errors_reach_the_calling_thread() -> None:
    assert run_watching_idle(lambda items: sum(items), WatchedItems(iter([1, 2, 3]), 5), THREAD_NAME) == 6

    def leave(items: Iterator[int]) -> int:
        raise SystemExit(3)  # not an Exception: it must come back all the same

    with pytest.raises(SystemExit):
        run_watching_idle(leave, WatchedItems(iter([1]), 5), THREAD_NAME)


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_seconds must be positive, got 0"):
        WatchedItems(iter([]), 0)
