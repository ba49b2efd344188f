"""The node time limit: a hung node fails its run, its thread is abandoned, everything else is cleaned up."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from fakes.fake_plugins import Recorder, make_registry
from fakes.waiting import wait_until
from videodag_service.dag import DagPipelineService, load_pipeline_folder
from videodag_service.dag.executor import NODE_THREAD_NAME
from videodag_service.dag.time_limit import StepLimitedThread, StepTimedOut, abandoned_thread_count
from videodag_service.errors import NodeFailed, NodeTimedOut
from videodag_service.observability.logging import current_request_id, request_id_bound

PIPELINES = {
    "hanging": """
        id: hanging
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            params: {{fail_on: [7]}}
            inputs: {{index: frame.index}}
          - id: hang
            plugin: test.hang
            params: {{hang_on: [{hang_on}]}}
            inputs: {{index: count.index}}
            on_error: {policy}
          - id: after
            plugin: test.add
            inputs: {{left: hang.index, right: count.count}}
        outputs:
          seen: count.count
          total: after.sum
    """,
}


def make_service(tmp_path: Path, recorder: Recorder, *, limit: float | None, hang_on: int = 2,
                 policy: str = "fail") -> DagPipelineService:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in PIPELINES.items():
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text.format(hang_on=hang_on, policy=policy)))
    return DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)), node_timeout_seconds=limit)


def node_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NODE_THREAD_NAME and t.is_alive()]




def test_a_limit_changes_no_result_and_its_thread_ends_with_the_run(tmp_path: Path) -> None:
    recorder = Recorder()
    limited = make_service(tmp_path / "a", recorder, limit=5.0, hang_on=-1)
    unlimited = make_service(tmp_path / "b", recorder, limit=None, hang_on=-1)
    before = len(node_threads())
    with unlimited.open_run("hanging") as run:
        expected = [run.process({"frame_index": i}) for i in range(5)]
        assert len(node_threads()) == before  # no limit: the caller's thread runs the nodes
    with limited.open_run("hanging") as run:
        assert [run.process({"frame_index": i}) for i in range(5)] == expected
        assert len(node_threads()) == before + 1
    assert len(node_threads()) == before
    assert expected[4] == {"seen": 5, "total": 4 + 5}


def test_node_errors_cross_the_thread_unchanged(tmp_path: Path) -> None:
    service = make_service(tmp_path, Recorder(), limit=5.0, hang_on=-1)
    with service.open_run("hanging") as run:
        for index in range(7):
            run.process({"frame_index": index})
        with pytest.raises(NodeFailed, match=r"node 'count' .* failed on frame 7: RuntimeError: boom on 7"):
            run.process({"frame_index": 7})


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_hung_node_fails_the_run_whatever_its_policy(tmp_path: Path, policy: str) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, limit=0.3, policy=policy)
    abandoned_before = abandoned_thread_count()
    with service.open_run("hanging") as run:
        run.process({"frame_index": 0})
        run.process({"frame_index": 1})
        started = time.monotonic()
        with pytest.raises(NodeTimedOut) as caught:
            run.process({"frame_index": 2})
        waited = time.monotonic() - started
        with pytest.raises(NodeTimedOut):  # the run stays failed
            run.process({"frame_index": 3})
    assert 0.3 <= waited < 2.0
    error = caught.value
    assert (error.pipeline_id, error.node_id, error.plugin, error.frame_index) == ("hanging", "hang", "test.hang", 2)
    assert error.status_code == "INTERNAL"
    assert error.reason == "NODE_TIMED_OUT"
    assert "failed on frame 2: no result within the node time limit of 0.3 s" in error.message
    assert error.details.metadata["node_timeout_seconds"] == "0.3"
    assert abandoned_thread_count() == abandoned_before + 1
    # The run is closed: the counter at once, the hung instance not under its live call.
    assert recorder.events.count(("close", "counter")) == 1
    assert ("close", "hang") not in recorder.events
    frames_counted = recorder.count("frame")

    recorder.release.set()
    assert wait_until(lambda: ("close", "hang") in recorder.events)
    assert wait_until(lambda: abandoned_thread_count() == abandoned_before)
    assert wait_until(lambda: not node_threads())
    # The returned call went no further: no node ran after it.
    assert recorder.count("frame") == frames_counted
    assert recorder.events.count(("close", "hang")) == 1


def test_the_clock_is_per_step_not_per_call() -> None:
    progress: list[tuple[object, float] | None] = [None]

    def three_steps(step_seconds: float) -> str:
        for step in ("a", "b", "c"):
            progress[0] = (step, time.perf_counter())
            time.sleep(step_seconds)
            progress[0] = None
        return "done"

    worker = StepLimitedThread(0.6, lambda: progress[0], "test-steps")
    try:
        assert worker.call(three_steps, 0.2) == "done"  # 0.6 s in all, each step well within 0.6 s
        with pytest.raises(StepTimedOut) as caught:
            worker.call(three_steps, 1.0)
        assert caught.value.step == "a"
        assert worker.abandoned
    finally:
        cleaned: list[bool] = []
        worker.abandon(lambda: cleaned.append(True))
        assert wait_until(lambda: cleaned == [True])


def test_the_thread_keeps_nothing_of_a_call_once_it_returned() -> None:
    """A call's argument (a frame lent from the decoder's ring) must be free once the call is done."""
    import weakref

    class Frame:
        pass

    worker = StepLimitedThread(5.0, lambda: None, "test-keeps-nothing")
    try:
        frame = Frame()
        seen = weakref.ref(frame)
        assert worker.call(lambda argument: type(argument).__name__, frame) == "Frame"
        del frame
        assert wait_until(lambda: seen() is None), "the thread still holds the last call's argument"
    finally:
        worker.close()


def test_a_submitted_call_runs_while_the_owner_works_and_without_a_limit_nothing_times_out() -> None:
    started = threading.Event()
    go_on = threading.Event()

    def slow(value: int) -> int:
        started.set()
        go_on.wait(10)
        return value * 2

    worker = StepLimitedThread(None, lambda: ("slow", time.perf_counter() - 3600), "test-submit")
    try:
        worker.submit(slow, 21)
        assert started.wait(10)
        assert not worker.ready()  # the owner is free meanwhile
        go_on.set()
        assert worker.result() == 42  # the step "began" an hour ago: with no limit that is fine
        assert not worker.abandoned
    finally:
        worker.close()


def test_a_close_that_hangs_is_given_up_on_after_the_limit(tmp_path: Path) -> None:
    """A close that never returns (a flush to a server that does not answer) would hold the
    run's slot, its summary and the server's shutdown for good."""
    (tmp_path / "closing.yaml").write_text(textwrap.dedent("""
        id: closing
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            inputs: {index: frame.index}
          - id: hang
            plugin: test.hang
            params: {hang_in_close: true}
            inputs: {index: count.index}
        outputs:
          index: hang.index
    """))
    recorder = Recorder()
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)), node_timeout_seconds=0.3)
    abandoned_before = abandoned_thread_count()
    with service.open_run("closing") as run:
        assert [run.process({"frame_index": index})["index"] for index in range(3)] == [0, 1, 2]
        started = time.monotonic()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert ("close", "counter") in recorder.events and ("close", "hang") not in recorder.events
    assert [timing.errors for timing in run.node_timings()] == [0, 1]
    assert abandoned_thread_count() == abandoned_before + 1

    recorder.release.set()
    assert wait_until(lambda: ("close", "hang") in recorder.events)
    assert wait_until(lambda: abandoned_thread_count() == abandoned_before)


def test_each_run_opens_its_nodes_with_a_copy_of_their_params(tmp_path: Path) -> None:
    """An instance keeping a parameter as its state and changing it changes no other run, nor
    what the pipeline describes."""
    recorder = Recorder()
    service = make_service(tmp_path, recorder, limit=None, hang_on=-1)
    for _ in range(2):
        with service.open_run("hanging") as run:
            run.process({"frame_index": 0})
        recorder.hang_params[-1]["hang_on"].append(0)  # as a plugin keeping its state there would
    assert [params["hang_on"] for params in recorder.hang_params] == [[-1, 0], [-1, 0]]
    described = next(node for node in service.get_pipeline("hanging").nodes if node.id == "hang")
    assert described.params["hang_on"] == described.given_params["hang_on"] == [-1]


def test_converting_the_output_of_a_tool_of_bounded_time_is_still_watched(tmp_path: Path) -> None:
    """A value's to_json() is code of its own, which the tool's promise does not cover (here the
    tool shares a lane, run in a thread, with the tracker-like counter that feeds it)."""
    (tmp_path / "slow.yaml").write_text(textwrap.dedent("""
        id: slow
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            inputs: {index: frame.index}
          - id: slow
            plugin: test.bounded_slow_json
            params: {seconds: 5.0}
            inputs: {index: count.index}
        outputs:
          value: slow.value
          seen: count.count
    """))
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry(Recorder())), node_timeout_seconds=0.3)
    started = time.monotonic()
    with service.open_run("slow") as run, pytest.raises(NodeTimedOut, match="node 'slow'"):
        run.process({"frame_index": 0})
    assert time.monotonic() - started < 2.0


def test_calls_run_with_the_request_id_of_the_run_that_made_the_thread() -> None:
    """A plugin's log lines carried no request id: the node threads started in a context of their own."""
    with request_id_bound("run-request-7"):
        worker = StepLimitedThread(5.0, lambda: None, "test-context")
    try:
        assert worker.call(lambda _: current_request_id(), None) == "run-request-7"
    finally:
        worker.close()
