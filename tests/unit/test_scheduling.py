"""Frame work runs under SCHED_BATCH; the threads that serve calls keep the default policy.

Checked where the work runs: the decoder process and FFmpeg's threads in it, the run's
read-ahead thread, the node threads and the job workers. The decoder's policies come back
through an opener defined here (the decoder process imports it by name), which reports them
as the error of its run.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService
from videodag_service.dag.time_limit import StepLimitedThread
from videodag_service.errors import VideoUnreadable
from videodag_service.jobs.dispatch import ThreadPoolJobQueue
from videodag_service.jobs.execution import JobExecutor
from videodag_service.jobs.model import Job
from videodag_service.scheduling import run_as_batch
from videodag_service.video import VideoFilePipelineService
from videodag_service.video.pipelining import read_ahead
from videodag_service.video.reader import OpenedVideo, open_video

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")


def _policy() -> int:
    return os.sched_getscheduler(0)  # 0: the calling thread, on Linux


def _in_new_thread(work: Callable[[], Any]) -> Any:
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    thread = threading.Thread(target=lambda: results.put(work()))
    thread.start()
    thread.join()
    return results.get_nowait()


@contextmanager
def open_reporting_policies(path: Path) -> Iterator[OpenedVideo]:
    """Opens the video for real (FFmpeg starts its threads), then reports every thread's policy."""
    with open_video(path) as video:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
        policies = sorted({os.sched_getscheduler(tid) for tid in threads})
        raise VideoUnreadable(f"threads={len(threads)} policies={policies}")
        yield video  # never reached


def test_run_as_batch_changes_the_calling_thread_and_the_threads_it_starts_then() -> None:
    def batch_then_child() -> tuple[int, int]:
        run_as_batch()
        return _policy(), _in_new_thread(_policy)

    assert _in_new_thread(batch_then_child) == (os.SCHED_BATCH, os.SCHED_BATCH)
    assert _policy() == os.SCHED_OTHER


def test_without_the_policy_run_as_batch_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "SCHED_BATCH")
    assert _in_new_thread(lambda: (run_as_batch(), _policy())[1]) == os.SCHED_OTHER


def test_a_refused_change_is_logged_and_costs_nothing_else(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.DEBUG, logger="videodag_service.scheduling"):
        run_as_batch()
    assert "Operation not permitted" in caplog.text
    assert _policy() == os.SCHED_OTHER


def test_node_threads_run_as_batch() -> None:
    thread = StepLimitedThread(5.0, lambda: None, "test-nodes")
    try:
        assert thread.call(lambda _: _policy(), None) == os.SCHED_BATCH
    finally:
        thread.close()
    assert _policy() == os.SCHED_OTHER


def test_the_read_ahead_thread_runs_as_batch_and_its_consumer_keeps_its_policy() -> None:
    def policies() -> Iterator[int]:
        yield _policy()

    with read_ahead(policies(), 1, thread_name="test-read-ahead") as ahead:
        assert list(ahead) == [os.SCHED_BATCH]
    assert _policy() == os.SCHED_OTHER


def test_the_decoder_process_and_ffmpegs_threads_in_it_run_as_batch(sample_clip: Path) -> None:
    service = VideoFilePipelineService(
        RecordingDagService(), isolation="process", video_opener=open_reporting_policies
    )
    with pytest.raises(VideoUnreadable) as raised:
        list(service.stream_run(DEFAULT_PIPELINE, sample_clip))
    reported = re.search(r"threads=(\d+) policies=(\[.*?\])", str(raised.value))
    assert reported is not None, raised.value
    assert int(reported[1]) > 1  # FFmpeg's threads were there too
    assert reported[2] == f"[{os.SCHED_BATCH}]"


def test_job_workers_run_as_batch() -> None:
    seen: queue.SimpleQueue[int] = queue.SimpleQueue()

    class RecordingExecutor:
        def execute(self, job_id: str, attempt: int, should_stop: Callable[[], bool]) -> None:
            seen.put(_policy())

    jobs = ThreadPoolJobQueue(cast(JobExecutor, RecordingExecutor()), workers=1)
    try:
        jobs.dispatch(cast(Job, SimpleNamespace(id="job-1", attempt=1)))
        assert seen.get(timeout=10) == os.SCHED_BATCH
    finally:
        jobs.close()
