"""The calls' thread pool when the process cannot start another thread (a container's pids limit)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

from fakes.thread_limits import no_new_threads
from fakes.waiting import wait_until
from videodag_client import Unavailable, VideodagClient
from videodag_service.dag import DagPipelineService
from videodag_service.rpc_threads import START_RETRY_SECONDS, RpcThreadPool
from videodag_service.server import start_server
from videodag_service.server_arguments import settings_from


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
        with no_new_threads("calls_"):
            waiting = pool.submit(lambda: "served")
        assert "no thread could be started for a call" in caplog.text
        assert not waiting.done()
        release.set()
        assert waiting.result(timeout=5) == "served"  # by the thread that came free
        assert pool.submit(lambda: "again").result(timeout=5) == "again"
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_a_call_waiting_with_no_thread_running_is_taken_once_a_thread_can_be_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With none of the pool's threads running yet (or all held by long streams), nothing came
    free to take it: a health check waited until its deadline, after the limit was lifted."""
    pool = RpcThreadPool(max_workers=4, thread_name_prefix="calls")
    try:
        with no_new_threads("calls_"):
            waiting = [pool.submit(lambda: "served") for _ in range(3)]
            threading.Event().wait(2 * START_RETRY_SECONDS)  # the retries fail too
            assert not any(call.done() for call in waiting)
        assert [call.result(timeout=5) for call in waiting] == ["served"] * 3  # no other call needed
        assert caplog.text.count("no thread could be started") == 1, "said once, not at every call or retry"
    finally:
        pool.shutdown(wait=True)


def test_a_stop_that_cannot_start_grpcs_grace_thread_still_stops_the_server(tmp_path: Path) -> None:
    """gRPC's stop starts a thread to time the calls' last second: at a pids limit the stop
    raised, and the server exited 1 with "can't start new thread", skipping its shutdown."""
    settings = settings_from(["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d")], {})
    running = start_server(settings, DagPipelineService.from_folder())
    with VideodagClient(f"127.0.0.1:{running.port}") as client:
        assert client.list_pipelines()
    with no_new_threads("Thread-"):  # gRPC's grace thread is named by its number
        running.stop(0)
    with VideodagClient(f"127.0.0.1:{running.port}", timeout=2) as client, pytest.raises(Unavailable):
        client.list_pipelines()


def test_a_pool_nobody_holds_goes_with_its_threads() -> None:
    """gRPC never shuts down the pool it was given: its starter thread, holding it, kept it and
    every thread of it alive after the server had gone."""
    pool = RpcThreadPool(max_workers=2, thread_name_prefix="forgotten")
    assert pool.submit(lambda: 1).result(timeout=5) == 1
    del pool
    gc.collect()
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("forgotten")])
