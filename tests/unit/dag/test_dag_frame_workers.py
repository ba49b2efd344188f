"""Several frames at once through the frame-independent nodes; stateful nodes still in frame order."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import Recorder, make_registry
from fakes.fake_plugins import frame_payloads as frames
from videodag_service.dag import DagPipelineService, executor, load_pipeline_folder
from videodag_service.dag.executor import NODE_THREAD_NAME
from videodag_service.dag.lanes import frame_independent_nodes
from videodag_service.dag.time_limit import abandoned_thread_count
from videodag_service.errors import NodeFailed, NodeTimedOut

# meet depends on the frame only; count is stateful; total is fed by count, so it waits its turn too.
OVERLAPPING = """
id: overlapping
version: "1"
nodes:
  - id: meet
    plugin: test.overlap
    params: {{wait_seconds: {wait}, fail_on: {fail_on}}}
    inputs: {{index: frame.index}}
    on_error: {policy}
  - id: count
    plugin: test.counter
    inputs: {{index: meet.index}}
  - id: total
    plugin: test.add
    params: {{offset: 100}}
    inputs: {{left: count.count, right: meet.index}}
outputs:
  total: total.sum
  seen: count.count
"""

HANGING = """
id: hanging
version: "1"
nodes:
  - id: stuck
    plugin: test.hang
    params: {hang_on: [1], hang_seconds: 30}
    inputs: {index: frame.index}
outputs:
  index: stuck.index
"""


def make_service(tmp_path: Path, recorder: Recorder, *, workers: int, wait: float = 5.0, fail_on: str = "[]",
                 policy: str = "fail", node_timeout_seconds: float | None = None) -> DagPipelineService:
    (tmp_path / "overlapping.yaml").write_text(
        textwrap.dedent(OVERLAPPING.format(wait=wait, fail_on=fail_on, policy=policy))
    )
    (tmp_path / "hanging.yaml").write_text(textwrap.dedent(HANGING))
    return DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)),
                              node_timeout_seconds=node_timeout_seconds, frame_workers=workers)


def expected(count: int) -> list[dict[str, Any]]:
    """What a run gives frame by frame: the counter sees every frame once, in order."""
    return [{"total": (index + 1) + index + 100, "seen": index + 1} for index in range(count)]


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def node_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == NODE_THREAD_NAME]


def test_the_frame_independent_nodes_are_stateless_and_fed_by_the_frame_only(tmp_path: Path) -> None:
    spec = make_service(tmp_path, Recorder(), workers=2).get_pipeline("overlapping")
    assert [node.id for node in frame_independent_nodes(spec)] == ["meet"]
    tracking = DagPipelineService.from_folder().get_pipeline("player_tracking_v1")
    assert [node.id for node in frame_independent_nodes(tracking)] == ["detect"]


def test_two_frames_pass_the_independent_nodes_at_once_and_results_keep_frame_order(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2)
    with service.open_run("overlapping") as run:
        results = [result for _, result in run.process_frames(frames(6))]
        timings = {timing.node_id: timing.calls for timing in run.node_timings()}
    assert results == expected(6)
    assert recorder.most_inside == 2
    # The stateful counter saw the frames in order, from one instance; meet had one per lane.
    assert [event[1] for event in recorder.events if event[0] == "frame"] == [str(i) for i in range(6)]
    assert recorder.events.count(("open", "overlap")) == 2
    assert recorder.events.count(("open", "counter")) == 1
    assert recorder.count("open") == recorder.count("close")
    assert timings == {"meet": 6, "count": 6, "total": 6}
    assert node_threads() == []


def test_the_first_frame_goes_alone_so_its_result_is_not_slowed_by_the_second(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2)
    with service.open_run("overlapping") as run:
        results = [result for _, result in run.process_frames(frames(4))]
    assert results == expected(4)
    steps = [event[:2] for event in recorder.events if event[0] in ("enter", "overlap")]
    assert steps[:2] == [("enter", "0"), ("overlap", "0")]  # nothing else entered meanwhile
    assert recorder.most_inside == 2


@pytest.mark.parametrize(
    ("workers", "parallel_min_seconds"), [(1, executor.PARALLEL_MIN_SECONDS), (2, 10.0)],
    ids=["one frame worker", "nodes quicker than the threshold"],
)
def test_frames_go_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, parallel_min_seconds: float
) -> None:
    # `meet` waits up to 0.2 s for company on the first frame: slow enough for the default
    # threshold (other tests let frames meet), not for one of 10 s.
    monkeypatch.setattr(executor, "PARALLEL_MIN_SECONDS", parallel_min_seconds)
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=workers, wait=0.2)
    with service.open_run("overlapping") as run:
        results = [result for _, result in run.process_frames(frames(4))]
    assert results == expected(4)
    assert recorder.most_inside == 1
    assert recorder.events.count(("open", "overlap")) == 1


def test_each_payload_comes_back_with_its_own_result(tmp_path: Path) -> None:
    service = make_service(tmp_path, Recorder(), workers=2)
    payloads = list(frames(5))
    with service.open_run("overlapping") as run:
        pairs = list(run.process_frames(iter(payloads)))
    assert [payload for payload, _ in pairs] == payloads
    assert [result["total"] - 100 - result["seen"] for _, result in pairs] == [0, 1, 2, 3, 4]


@pytest.fixture
def any_node_pays_for_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames overlap in the lanes however quick the nodes (the tests of how they overlap)."""
    monkeypatch.setattr(executor, "PARALLEL_MIN_SECONDS", 0.0)


@pytest.mark.usefixtures("any_node_pays_for_parallel")
def test_a_result_is_handed_out_while_a_later_frame_is_still_running(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2)
    with service.open_run("hanging") as run:
        results = run.process_frames(frames(3))
        _, first = next(results)
        assert first == {"index": 0}
        wait_for(lambda: ("hang", "1") in recorder.events)
        assert ("hang_returned", "1") not in recorder.events  # frame 0 did not wait for frame 1
        recorder.release.set()
        assert [result for _, result in results] == [{"index": 1}, {"index": 2}]


def counted(payloads: Iterator[dict[str, Any]], taken: list[int]) -> Iterator[dict[str, Any]]:
    """`payloads`, noting in `taken` each frame index as the run takes it."""
    for payload in payloads:
        taken.append(payload["frame_index"])
        yield payload


@pytest.mark.usefixtures("any_node_pays_for_parallel")
@pytest.mark.parametrize(("ready", "taken_before_first_result"), [(None, [0, 1, 2]), (lambda: False, [0])])
def test_a_done_frame_waits_for_no_frame_that_is_not_ready(
    tmp_path: Path, ready: Callable[[], bool] | None, taken_before_first_result: list[int]
) -> None:
    # Without `ready`, the lanes freed by frame 0 are refilled before its result goes out;
    # with a source that has nothing decoded yet, frame 0's result goes out first.
    service = make_service(tmp_path, Recorder(), workers=2, wait=0.0)
    taken: list[int] = []
    with service.open_run("overlapping") as run:
        results = run.process_frames(counted(frames(5), taken), ready)
        _, first = next(results)
        assert first == expected(1)[0]
        assert taken == taken_before_first_result
        assert [result for _, result in results] == expected(5)[1:]
    assert node_threads() == []


def test_with_nothing_ready_the_run_still_waits_for_a_frame_to_fill_a_lane_while_the_oldest_runs(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2)
    with service.open_run("overlapping") as run:
        results = [result for _, result in run.process_frames(frames(6), lambda: False)]
    assert results == expected(6)
    assert recorder.most_inside == 2  # each frame waited in `meet` until the next one joined it


def test_quick_frame_independent_nodes_take_one_frame_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `meet` returns at once (wait 0): far under PARALLEL_MIN_SECONDS, so a second frame in
    # flight would cost more than it saves. The threshold is raised so that a loaded machine,
    # where even a call that does nothing can take over 1 ms, does not count it as slow.
    monkeypatch.setattr(executor, "PARALLEL_MIN_SECONDS", 0.1)
    service = make_service(tmp_path, Recorder(), workers=2, wait=0.0)
    taken: list[int] = []
    taken_at_each_result: list[list[int]] = []
    with service.open_run("overlapping") as run:
        for _, result in run.process_frames(counted(frames(6), taken)):
            taken_at_each_result.append(list(taken))
            assert result == expected(6)[len(taken_at_each_result) - 1]
    assert taken_at_each_result == [list(range(index + 1)) for index in range(6)]


def test_a_failing_independent_node_fails_the_run_after_the_frames_before_it(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2, wait=0.05, fail_on="[2]")
    results: list[dict[str, Any]] = []
    with pytest.raises(NodeFailed) as caught, service.open_run("overlapping") as run:
        results.extend(result for _, result in run.process_frames(frames(6)))
    assert (caught.value.node_id, caught.value.frame_index) == ("meet", 2)
    assert results == expected(2)
    assert recorder.count("open") == recorder.count("close")
    assert node_threads() == []


def test_a_skipped_independent_node_skips_its_dependents_in_the_ordered_lane(tmp_path: Path) -> None:
    service = make_service(tmp_path, Recorder(), workers=2, wait=0.05, fail_on="[1]", policy="skip")
    with service.open_run("overlapping") as run:
        results = [result for _, result in run.process_frames(frames(3))]
    assert results[0] == {"total": 101, "seen": 1}
    assert [(error["node_id"], error["code"]) for error in results[1]["errors"]] == [
        ("meet", "INTERNAL"), ("count", "ABORTED"), ("total", "ABORTED"),
    ]
    assert results[2] == {"total": 2 + 2 + 100, "seen": 2}


def test_closing_early_waits_for_the_frames_in_flight_and_closes_everything(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2)
    with service.open_run("overlapping") as run:
        results = run.process_frames(frames(100))
        next(results)
        results.close()  # a cancelled client
        calls = {timing.node_id: timing.calls for timing in run.node_timings()}
    # Frame 0 was handed out with frames 1 and 2 in the lanes: they were finished, not cut
    # off, and nothing was taken after them.
    assert calls["meet"] == 3 and calls["count"] == 1
    assert recorder.count("open") == recorder.count("close") == 3
    assert node_threads() == []


@pytest.mark.usefixtures("any_node_pays_for_parallel")
def test_a_hung_independent_node_fails_the_run_and_only_its_thread_is_left(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=2, node_timeout_seconds=0.3)
    abandoned_before = abandoned_thread_count()
    received: list[dict[str, Any]] = []
    with pytest.raises(NodeTimedOut) as caught, service.open_run("hanging") as run:
        received.extend(result for _, result in run.process_frames(frames(4)))
    assert (caught.value.node_id, caught.value.frame_index) == ("stuck", 1)
    assert received == [{"index": 0}]
    assert abandoned_thread_count() == abandoned_before + 1
    # The other lane's instance is closed; the hung one is closed by its thread once it returns.
    assert recorder.count("close") == 1
    recorder.release.set()
    wait_for(lambda: abandoned_thread_count() == abandoned_before)
    assert recorder.count("close") == recorder.count("open") == 2
    assert node_threads() == []


def test_an_error_from_the_frames_comes_after_the_results_of_the_frames_taken_before_it(tmp_path: Path) -> None:
    class DecoderCrashed(Exception):
        pass

    def crashing_frames() -> Iterator[dict[str, Any]]:
        yield from frames(3)
        raise DecoderCrashed("no frame 3")

    service = make_service(tmp_path, Recorder(), workers=2, wait=0.05)
    received: list[dict[str, Any]] = []
    with pytest.raises(DecoderCrashed), service.open_run("overlapping") as run:
        received.extend(result for _, result in run.process_frames(crashing_frames()))
    assert received == expected(3)


def test_lanes_past_the_first_open_on_their_first_frame_so_a_short_video_opens_one(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, workers=4)
    with service.open_run("overlapping") as run:
        assert recorder.events.count(("open", "overlap")) == 1
        assert [result for _, result in run.process_frames(frames(1))] == expected(1)
        assert recorder.events.count(("open", "overlap")) == 1
    assert recorder.count("open") == recorder.count("close") == 2
