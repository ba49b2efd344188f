"""The executor: wiring, order, per-run state, failure policies, cleanup and timing."""

from __future__ import annotations

import logging
import textwrap
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import Recorder, counter_pipeline, dag_with_test_pipelines, make_registry
from fakes.fake_plugins import frame_payloads as frames
from videodag_service.dag import DagPipelineService, load_pipeline_folder, to_json_like
from videodag_service.errors import NodeFailed
from videodag_service.plugins.detections import Detections

PIPELINE = """
id: {id}
version: "1"
nodes:
  - id: count
    plugin: test.counter
    params: {{fail_on: {fail_on}, delay_seconds: {delay}}}
    inputs: {{index: frame.index}}
    on_error: {policy}
  - id: total
    plugin: test.add
    params: {{offset: 100}}
    inputs: {{left: count.count, right: frame.index}}
outputs:
  total: total.sum
  seen: count.count
"""


def make_service(tmp_path: Path, recorder: Recorder, *, fail_on: str = "[]", policy: str = "fail",
                 delay: float = 0.0, extra: Mapping[str, str] | None = None) -> DagPipelineService:
    (tmp_path / "counting.yaml").write_text(
        textwrap.dedent(PIPELINE.format(id="counting", fail_on=fail_on, policy=policy, delay=delay))
    )
    for name, text in (extra or {}).items():
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
    return DagPipelineService(load_pipeline_folder(tmp_path, make_registry(recorder)))


def test_nodes_run_in_order_with_wired_inputs_and_state_per_run(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder)
    with service.open_run("counting") as run:
        results = [run.process(payload) for payload in frames(3)]
    assert results == [
        {"total": 1 + 0 + 100, "seen": 1},
        {"total": 2 + 1 + 100, "seen": 2},
        {"total": 3 + 2 + 100, "seen": 3},
    ]
    # A second run starts from fresh state.
    with service.open_run("counting") as run:
        assert run.process({"frame_index": 7})["seen"] == 1
    assert recorder.count("open") == 2
    assert recorder.count("close") == 2


def test_run_pipeline_serves_single_frame_callers_with_fresh_state(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder)
    assert service.run_pipeline("counting", {"frame_index": 5}) == {"total": 106, "seen": 1}
    assert service.run_pipeline("counting", {"frame_index": 5}) == {"total": 106, "seen": 1}
    assert recorder.count("open") == recorder.count("close") == 2


def test_concurrent_runs_never_share_state(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, delay=0.002)
    seen: dict[int, list[int]] = {}
    start = threading.Barrier(4)

    def one_video(worker: int) -> None:
        start.wait()
        with service.open_run("counting") as run:
            seen[worker] = [run.process(payload)["seen"] for payload in frames(25)]

    threads = [threading.Thread(target=one_video, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(counts == list(range(1, 26)) for counts in seen.values())
    assert len(seen) == 4
    assert recorder.count("open") == recorder.count("close") == 4


def test_failing_node_fails_the_run_naming_pipeline_node_plugin_and_frame(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder, fail_on="[2]")
    with pytest.raises(NodeFailed) as caught, service.open_run("counting") as run:
        for payload in frames(5):
            run.process(payload)
    error = caught.value
    where = (error.pipeline_id, error.node_id, error.plugin, error.frame_index)
    assert where == ("counting", "count", "test.counter", 2)
    assert "pipeline 'counting' node 'count' (test.counter) failed on frame 2: RuntimeError: boom on 2" in str(error)
    assert error.status_code == "INTERNAL"
    assert recorder.count("close") == 1


def test_skip_policy_reports_the_error_in_band_and_skips_dependents(tmp_path: Path) -> None:
    service = make_service(tmp_path, Recorder(), fail_on="[1]", policy="skip")
    with service.open_run("counting") as run:
        results = [run.process(payload) for payload in frames(3)]
        timings = {t.node_id: t for t in run.node_timings()}
    assert results[0] == {"total": 101, "seen": 1}
    assert results[1] == {
        "errors": [
            {"node_id": "count", "plugin": "test.counter", "code": "INTERNAL", "message": "RuntimeError: boom on 1"},
            {"node_id": "total", "plugin": "test.add", "code": "ABORTED",
             "message": "skipped because node 'count' failed"},
        ]
    }
    assert results[2] == {"total": 3 + 2 + 100, "seen": 3}
    assert timings["count"].errors == 1
    assert timings["count"].calls == 3
    assert timings["total"].calls == 2


def test_close_is_called_when_the_caller_stops_early(tmp_path: Path) -> None:
    recorder = Recorder()
    service = make_service(tmp_path, recorder)

    def stream() -> Iterator[dict[str, Any]]:
        with service.open_run("counting") as run:
            for payload in frames(100):
                yield run.process(payload)

    events = stream()
    next(events)
    events.close()  # what a cancelled client amounts to
    assert recorder.count("close") == 1


def test_timings_are_collected_per_node(tmp_path: Path) -> None:
    service = make_service(tmp_path, Recorder(), delay=0.01)
    with service.open_run("counting") as run:
        for payload in frames(4):
            run.process(payload)
        timings = run.node_timings()
    assert [t.node_id for t in timings] == ["count", "total"]
    assert timings[0].calls == 4
    assert timings[0].total_seconds >= 0.04
    assert timings[1].total_seconds < timings[0].total_seconds


def test_converting_a_nodes_outputs_is_timed_as_its_work(tmp_path: Path) -> None:
    slow = """
    id: slow
    version: "1"
    nodes:
      - id: slow
        plugin: test.slow_json
        params: {seconds: 0.02}
        inputs: {index: frame.index}
    outputs:
      value: slow.value
    """
    service = make_service(tmp_path, Recorder(), extra={"slow": slow})
    with service.open_run("slow") as run:
        assert [run.process(payload)["value"] for payload in frames(4)] == [{"slow": True}] * 4
        (timing,) = run.node_timings()
    assert timing.calls == 4 and timing.total_seconds >= 0.08


def test_output_that_is_not_json_like_fails_naming_the_node(tmp_path: Path) -> None:
    bad = """
    id: bad
    version: "1"
    nodes:
      - id: weird
        plugin: test.bad_output
        inputs: {index: frame.index}
    outputs:
      value: weird.value
    """
    service = make_service(tmp_path, Recorder(), extra={"bad": bad})
    with pytest.raises(NodeFailed, match=r"node 'weird' \(test.bad_output\) failed on frame 0: output 'value' is not"):
        service.run_pipeline("bad", {"frame_index": 0})


def test_an_output_that_cannot_be_sent_skips_the_nodes_it_feeds_under_skip(tmp_path: Path) -> None:
    """Converted when its node returns, not after every node ran: the nodes it feeds never
    read the value the node failed for, as after a failed call."""
    bad = """
    id: bad
    version: "1"
    nodes:
      - id: weird
        plugin: test.bad_output
        inputs: {index: frame.index}
        on_error: skip
      - id: size
        plugin: test.size
        inputs: {data: weird.value}
    outputs:
      value: weird.value
      length: size.length
    """
    service = make_service(tmp_path, Recorder(), extra={"bad": bad})
    result = service.run_pipeline("bad", {"frame_index": 0})
    assert "value" not in result and "length" not in result
    assert [(error["node_id"], error["code"]) for error in result["errors"]] == [
        ("weird", "INTERNAL"), ("size", "ABORTED")
    ]
    assert result["errors"][0]["message"].startswith("output 'value' is not JSON-like")


class CountingPayload(Mapping[str, Any]):
    """A payload that counts reads of each key, like the video layer's lazy payload."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}

    def __getitem__(self, key: str) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return {"frame_index": 0, "timestamp": 0.0, "image": None, "image_bytes": b"1234"}[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("frame_index", "timestamp", "image", "image_bytes"))

    def __len__(self) -> int:
        return 4


def test_engine_reads_only_the_frame_fields_nodes_ask_for(tmp_path: Path) -> None:
    with_bytes = """
    id: sized
    version: "1"
    nodes:
      - id: size
        plugin: test.size
        inputs: {data: frame.image_bytes}
    outputs:
      length: size.length
    """
    service = make_service(tmp_path, Recorder(), extra={"sized": with_bytes})
    payload = CountingPayload()
    service.run_pipeline("counting", payload)
    assert "image_bytes" not in payload.reads
    assert service.run_pipeline("sized", payload) == {"length": 4}
    assert payload.reads["image_bytes"] == 1


def test_to_json_like_converts_numpy_and_detections_and_refuses_the_rest() -> None:
    import numpy as np

    detections = Detections.from_lists([[1, 2, 3, 4]], [0.5], ["person"], track_ids=[7])
    assert to_json_like({"d": detections, "n": np.float32(0.25), "a": np.arange(3)}) == {
        "d": [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "label": "person", "track_id": 7}],
        "n": 0.25,
        "a": [0, 1, 2],
    }
    for bad in (b"bytes", float("nan"), {1: "x"}, object()):
        with pytest.raises(TypeError):
            to_json_like(bad)


def exiting_service(tmp_path: Path, node_timeout_seconds: float | None, **params: object) -> DagPipelineService:
    service = dag_with_test_pipelines(tmp_path, {"exiting.yaml": counter_pipeline("exiting", **params)})
    service.node_timeout_seconds = node_timeout_seconds  # with a limit, a call runs in a thread of its lane
    return service


@pytest.mark.parametrize("node_timeout_seconds", [None, 30.0], ids=["in-the-run-thread", "in-a-lane-thread"])
@pytest.mark.parametrize("raising", ["SystemExit", "KeyboardInterrupt", "CancelledError"])
def test_a_plugin_raising_an_exit_fails_its_node_not_the_thread_it_runs_in(
    tmp_path: Path, raising: str, node_timeout_seconds: float | None
) -> None:
    """A library's sys.exit() in a plugin: escaping, it ended the thread running the call, which
    left the gRPC call without a status and a job worker gone."""
    service = exiting_service(tmp_path, node_timeout_seconds, fail_on=[2], raising=raising)
    with pytest.raises(NodeFailed) as caught, service.open_run("exiting") as run:
        for payload in frames(5):
            run.process(payload)
    assert caught.value.frame_index == 2
    assert f"(test.counter) failed on frame 2: {raising}: boom on 2" in str(caught.value)


def test_a_plugin_raising_an_exit_under_skip_is_reported_in_band_and_the_run_goes_on(tmp_path: Path) -> None:
    yaml = counter_pipeline("exiting", fail_on=[1], raising="SystemExit").replace(
        "inputs: {index: frame.index}", "inputs: {index: frame.index}\n    on_error: skip")
    service = dag_with_test_pipelines(tmp_path, {"exiting.yaml": yaml})
    with service.open_run("exiting") as run:
        results = [run.process(payload) for payload in frames(3)]
    assert results[1]["errors"][0]["message"] == "SystemExit: boom on 1"
    assert results[2] == {"seen": 3}


def test_a_plugin_raising_an_exit_when_opened_fails_its_node(tmp_path: Path) -> None:
    service = exiting_service(tmp_path, None, fail_opening=True, raising="SystemExit")
    with pytest.raises(NodeFailed) as caught, service.open_run("exiting") as run:
        run.process({"frame_index": 0})
    assert str(caught.value) == (
        "pipeline 'exiting' node 'count' (test.counter) could not be opened for the run: SystemExit: boom opening")


def test_an_exception_whose_message_cannot_be_read_still_fails_its_node(tmp_path: Path) -> None:
    service = exiting_service(tmp_path, None, fail_on=[0], raising="Unprintable")
    with pytest.raises(NodeFailed) as caught, service.open_run("exiting") as run:
        run.process({"frame_index": 0})
    assert "failed on frame 0: _Unprintable: (its message could not be read: RuntimeError)" in str(caught.value)


def test_a_plugin_failure_leaves_its_traceback_in_the_debug_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The status and the frame's errors carry the exception's text only; its author needs where it came from."""
    yaml = counter_pipeline("failing", fail_on=[1]).replace(
        "inputs: {index: frame.index}", "inputs: {index: frame.index}\n    on_error: skip")
    service = dag_with_test_pipelines(tmp_path, {"failing.yaml": yaml})
    with caplog.at_level(logging.DEBUG, logger="videodag_service.dag"), service.open_run("failing") as run:
        for payload in frames(2):
            run.process(payload)
    (failure,) = [record for record in caplog.records if "failed on frame 1" in record.getMessage()]
    assert failure.getMessage() == "node 'count' of pipeline 'failing' failed on frame 1"
    assert failure.exc_info is not None and "boom on 1" in str(failure.exc_info[1])
