"""The calls' thread pool when the process cannot start another thread (a container's pids limit)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from videodag_service.rpc_threads import RpcThreadPool


@contextmanager
def _no_new_threads(prefix: str) -> Iterator[None]:
    """Starting a thread of the pool fails, as at a pids limit."""
    start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith(prefix):
            raise RuntimeError("can't start new thread")
        start(thread)

    threading.Thread.start = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.start = start  # type: ignore[method-assign]


def test_a_call_that_finds_no_thread_waits_for_one_instead_of_failing_the_submitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gRPC submits calls from its one serving thread: the start's failure killed it, and the
    server answered nothing again."""
    pool = RpcThreadPool(max_workers=4, thread_name_prefix="calls")
    busy = threading.Event()
    release = threading.Event()
    try:
        pool.submit(lambda: (busy.set(), release.wait(10)))
        assert busy.wait(5)
        with _no_new_threads("calls"):
            waiting = pool.submit(lambda: "served")
        assert "no thread could be started for a call" in caplog.text
        assert not waiting.done()
        release.set()
        assert waiting.result(timeout=5) == "served"  # by the thread that came free
        assert pool.submit(lambda: "again").result(timeout=5) == "again"
    finally:
        release.set()
        pool.shutdown(wait=True)
