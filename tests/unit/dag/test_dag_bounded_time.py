"""Tools that promise a bounded time run in the run's own thread, outside the node time limit."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fakes.fake_plugins import Recorder, make_registry
from fakes.fake_plugins import frame_payloads as frames
from fakes.waiting import wait_until
from videodag_service.dag import (
    BUILTIN_PIPELINE_DIR,
    DagPipelineService,
    default_registry,
    executor,
    load_pipeline_folder,
)
from videodag_service.dag.executor import NODE_THREAD_NAME
from videodag_service.dag.time_limit import abandoned_thread_count
from videodag_service.errors import NodeFailed, NodeTimedOut

# `timed` depends on the frame only (a parallel lane with frame workers); `count` is stateful.
TIMED = """
id: timed
version: "1"
nodes:
  - id: timed
    plugin: test.{tool}
    params: {{seconds: {seconds}, fail_on: {fail_on}}}
    inputs: {{index: frame.index}}
    on_error: {policy}
  - id: count
    plugin: test.counter
    inputs: {{index: timed.index}}
outputs:
  index: timed.index
  seen: count.count
"""


# Only bounded nodes: with one frame worker they are the ordered lane, all of it.
BOUNDED_ONLY = """
id: bounded_only
version: "1"
nodes:
  - id: timed
    plugin: test.bounded
    inputs: {index: frame.index}
  - id: again
    plugin: test.bounded
    inputs: {index: timed.index}
outputs:
  index: again.index
"""


@pytest.fixture(autouse=True)
def quick_means_under_a_tenth_of_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine a call that does nothing can take more than the engine's 1 ms and
    send the next frame to a lane: where quick tools run must not depend on the load."""
    monkeypatch.setattr(executor, "PARALLEL_MIN_SECONDS", 0.1)


def make_service(tmp_path: Path, recorder: Recorder, *, tool: str = "bounded", seconds: float = 0.0,
                 fail_on: str = "[]", policy: str = "fail", workers: int = 2,
                 node_timeout_seconds: float | None = 5.0) -> DagPipelineService:
    (tmp_path / "timed.yaml").write_text(
        textwrap.dedent(TIMED.format(tool=tool, seconds=seconds, fail_on=fail_on, policy=policy))
    )
    (tmp_path / "bounded_only.yaml").write_text(textwrap.dedent(BOUNDED_ONLY))
    return DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)),
                              node_timeout_seconds=node_timeout_seconds, frame_workers=workers)


def expected(count: int) -> list[dict[str, Any]]:
    return [{"index": index, "seen": index + 1} for index in range(count)]


def call_threads(recorder: Recorder) -> list[str]:
    return [event[2] for event in recorder.events if event[0] == "timed"]


def test_a_bounded_tool_runs_in_the_runs_own_thread_even_under_a_time_limit(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder).open_run("timed") as run:
        results = [result for _, result in run.process_frames(frames(5))]
    assert results == expected(5)
    assert call_threads(recorder) == [threading.current_thread().name] * 5


def test_an_ordered_lane_of_bounded_tools_runs_in_the_runs_own_thread(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder, workers=1).open_run("bounded_only") as run:
        results = [result for _, result in run.process_frames(frames(3))]
    assert results == [{"index": index} for index in range(3)]
    assert call_threads(recorder) == [threading.current_thread().name] * 6


def test_an_ordered_lane_with_a_tool_without_the_promise_runs_in_a_node_thread(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder, workers=1).open_run("timed") as run:
        assert [result for _, result in run.process_frames(frames(3))] == expected(3)
    assert call_threads(recorder) == [NODE_THREAD_NAME] * 3


def test_the_same_tool_without_the_promise_runs_in_a_node_thread(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder, tool="unbounded").open_run("timed") as run:
        results = [result for _, result in run.process_frames(frames(5))]
    assert results == expected(5)
    assert call_threads(recorder) == [NODE_THREAD_NAME] * 5


def test_a_bounded_tool_is_not_held_to_the_time_limit_in_the_runs_thread_or_a_lanes(tmp_path: Path) -> None:
    recorder = Recorder()
    abandoned_before = abandoned_thread_count()
    service = make_service(tmp_path, recorder, seconds=0.3, node_timeout_seconds=0.1)
    with service.open_run("timed") as run:
        results = [result for _, result in run.process_frames(frames(3))]
    assert results == expected(3)
    # Slow enough for frames in parallel after the first: the later calls ran in lanes' threads.
    assert call_threads(recorder)[1:] == [NODE_THREAD_NAME] * 2
    assert abandoned_thread_count() == abandoned_before


def test_the_unbounded_tool_over_the_same_limit_fails_the_run(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, tool="unbounded", seconds=0.3, node_timeout_seconds=0.1)
    with service.open_run("timed") as run, pytest.raises(NodeTimedOut):
        list(run.process_frames(frames(2)))


@pytest.mark.usefixtures("any_node_pays_for_parallel")
def test_bounded_nodes_slow_enough_for_parallel_frames_go_to_the_lanes_threads(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder, seconds=0.01).open_run("timed") as run:
        results = [result for _, result in run.process_frames(frames(6))]
    assert results == expected(6)
    threads = call_threads(recorder)
    assert threads[0] == threading.current_thread().name  # unmeasured yet: the first frame runs here
    assert set(threads[1:]) == {NODE_THREAD_NAME}


def test_a_failing_bounded_node_fails_the_run_after_the_results_before_it(tmp_path: Path) -> None:
    recorder = Recorder()
    results: list[dict[str, Any]] = []
    with make_service(tmp_path, recorder, fail_on="[2]").open_run("timed") as run, \
            pytest.raises(NodeFailed) as raised:
        for _, result in run.process_frames(frames(5)):
            results.append(result)
    assert results == expected(2)
    assert raised.value.node_id == "timed" and raised.value.frame_index == 2


def test_a_skipped_bounded_node_reports_the_frame_and_the_run_goes_on(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder, fail_on="[2]", policy="skip").open_run("timed") as run:
        results = [result for _, result in run.process_frames(frames(4))]
    assert [result.get("index") for result in results] == [0, 1, None, 3]
    assert results[2]["errors"][0]["node_id"] == "timed"


def test_closing_early_leaves_nothing_waiting(tmp_path: Path) -> None:
    recorder = Recorder()
    with make_service(tmp_path, recorder).open_run("timed") as run:
        results = run.process_frames(frames(5))
        assert next(results)[1] == expected(1)[0]
        results.close()
        assert [result for _, result in run.process_frames(frames(2))] == [{"index": 0, "seen": 2},
                                                                          {"index": 1, "seen": 3}]
    assert recorder.count("open") == recorder.count("close")


def test_frame_stats_runs_in_the_runs_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    service = DagPipelineService(load_pipeline_folder(BUILTIN_PIPELINE_DIR, default_registry()),
                                 node_timeout_seconds=5.0, frame_workers=2)
    started: list[threading.Thread] = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: (started.append(thread), real_start(thread))[1])
    image = np.full((48, 64, 3), 100, dtype=np.uint8)
    payloads = ({"frame_index": index, "timestamp": index / 25, "image": image} for index in range(3))
    with service.open_run("frame_stats_v1") as run:
        results = [result for _, result in run.process_frames(payloads)]
    assert [result["stats"]["mean_brightness"] for result in results] == [100.0] * 3
    assert [thread.name for thread in started if thread.name == NODE_THREAD_NAME] == []


@pytest.fixture
def any_node_pays_for_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "PARALLEL_MIN_SECONDS", 0.0)


SLOW_OPEN = """
id: slow_open
version: "1"
nodes:
  - id: count
    plugin: test.counter
    params: {open_seconds: 1.5}
    inputs: {index: frame.index}
outputs:
  seen: count.count
"""


def test_a_node_whose_open_outlives_the_time_limit_fails_the_run_and_is_closed_once_it_opens(
    tmp_path: Path,
) -> None:
    """A tool fetching its model from a server that does not answer held the run, and its
    slot, for good: opening is a node's step like any call."""
    (tmp_path / "slow_open.yaml").write_text(textwrap.dedent(SLOW_OPEN))
    recorder = Recorder()
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)), node_timeout_seconds=0.3)
    abandoned_before = abandoned_thread_count()
    started = time.monotonic()
    with pytest.raises(NodeTimedOut) as caught, service.open_run("slow_open"):
        pass
    assert time.monotonic() - started < 1.2
    assert caught.value.node_id == "count"
    assert "could not be opened for the run: its open() took longer than the node time limit of 0.3 s" in str(
        caught.value)
    assert caught.value.details.metadata == {"pipeline_id": "slow_open", "node_id": "count", "plugin": "test.counter",
                                             "node_timeout_seconds": "0.3"}  # no frame: no frame_index
    # The open returns later: its instance is closed then, and its thread ends.
    assert wait_until(lambda: recorder.count("close") == 1, timeout=10)
    assert recorder.count("open") == 1
    assert wait_until(lambda: abandoned_thread_count() <= abandoned_before, timeout=10)
