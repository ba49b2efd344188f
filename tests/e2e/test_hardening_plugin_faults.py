"""Plugins that hang or return what is not JSON-like: a typed error naming the node, the server unaffected."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from hardening_support import assert_still_serving, wait_until
from harness import ServerFactory

from videodag_client import FrameResult, Internal, JobState
from videodag_service.dag.time_limit import abandoned_thread_count


def test_a_hung_plugin_fails_its_run_while_the_server_serves_others(
    make_server: ServerFactory, make_video, caplog: pytest.LogCaptureFixture
) -> None:
    # 3 s: long enough for the other run to go start to end within the hang on a loaded machine.
    server = make_server(node_timeout_seconds=3.0)
    video = make_video(10)
    abandoned_before = abandoned_thread_count()
    frames: list[int] = []
    failures: list[tuple[Internal, float]] = []

    def hanging_run() -> None:
        try:
            for event in server.client.upload_and_run(video, "hanging", timeout=30):
                if isinstance(event, FrameResult):
                    frames.append(event.frame_index)
        except Internal as error:
            failures.append((error, time.monotonic()))

    caplog.set_level(logging.ERROR, logger="videodag_service.dag.executor")
    runner = threading.Thread(target=hanging_run)
    runner.start()
    assert wait_until(lambda: server.recorder.count("hang") == 1)
    hang_started = time.monotonic()
    assert_still_serving(server, video)  # another run, start to end, while the plugin hangs
    other_run_done = time.monotonic()
    runner.join(timeout=20)

    assert not runner.is_alive()
    (error, failed_at) = failures[0]
    assert other_run_done < failed_at
    waited = failed_at - hang_started  # hang_started is seen up to one poll late
    assert waited >= 2.9
    assert waited < 8.0
    assert frames == [0, 1]
    assert "pipeline 'hanging' node 'hang' (test.hang) failed on frame 2" in error.message
    assert "no result within the node time limit of 3 s" in error.message
    assert error.reason == "NODE_TIMED_OUT"
    assert {k: error.metadata[k] for k in ("pipeline_id", "node_id", "plugin", "frame_index")} == {
        "pipeline_id": "hanging", "node_id": "hang", "plugin": "test.hang", "frame_index": "2",
    }
    assert server.leftover_uploads() == []
    # The run was closed around the hung call: the counter now, the hung instance not under its call.
    assert server.recorder.events.count(("close", "counter")) == 1
    assert ("close", "hang") not in server.recorder.events
    assert abandoned_thread_count() == abandoned_before + 1
    assert any("abandoned" in record.getMessage() for record in caplog.records)

    server.recorder.release.set()
    assert wait_until(lambda: ("close", "hang") in server.recorder.events)
    assert wait_until(lambda: abandoned_thread_count() == abandoned_before)
    assert_still_serving(server, video)


@pytest.mark.parametrize(
    ("pipeline_id", "what"),
    [("raw_bytes", "value of type bytes"), ("raw_nan", "non-finite number nan")],
)
def test_output_that_is_not_json_like_is_internal_naming_the_node(
    make_server: ServerFactory, make_video, pipeline_id: str, what: str
) -> None:
    server = make_server()
    video: Path = make_video(5)
    frames: list[int] = []
    with pytest.raises(Internal) as caught:
        for event in server.client.upload_and_run(video, pipeline_id, timeout=30):
            if isinstance(event, FrameResult):
                frames.append(event.frame_index)
    assert frames == [0]
    assert f"pipeline {pipeline_id!r} node 'raw' (test.raw_output) failed on frame 1" in caught.value.message
    assert f"output 'value' is not JSON-like: {what}" in caught.value.message
    assert caught.value.reason == "NODE_FAILED"
    assert caught.value.metadata["node_id"] == "raw"
    assert server.leftover_uploads() == []
    assert_still_serving(server, video)


def test_a_plugin_calling_sys_exit_fails_its_run_and_its_job_and_the_job_worker_goes_on(
    make_server: ServerFactory, make_video
) -> None:
    """SystemExit escaped the node: the call never got its status (the client waited for its
    deadline), and the job's worker thread ended, leaving the next jobs queued for good."""
    server = make_server(job_workers=1)
    video: Path = make_video(5)
    frames: list[int] = []
    with pytest.raises(Internal) as caught:
        for event in server.client.upload_and_run(video, "exiting", timeout=30):
            if isinstance(event, FrameResult):
                frames.append(event.frame_index)
    assert frames == [0, 1]
    assert caught.value.reason == "NODE_FAILED"
    assert "node 'count' (test.counter) failed on frame 2: SystemExit: boom on 2" in caught.value.message

    exiting = server.client.submit_job(video, "exiting")
    following = server.client.submit_job(video, "frame_stats_v1")
    assert wait_until(lambda: server.client.get_job(following.id).state.is_finished, timeout=30)
    assert server.client.get_job(exiting.id).state is JobState.FAILED
    assert server.client.get_job(following.id).state is JobState.SUCCEEDED
    assert server.leftover_uploads() == []
    assert server.job_videos_left_after() == []
