"""Frame results: what a node output must be to leave a run, and what happens when it is not."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from fakes.fake_plugins import make_registry
from videodag.v1 import video_pipeline_service_pb2
from videodag_service.convert import frame_result
from videodag_service.dag import DagPipelineService, load_pipeline_folder, to_json_like
from videodag_service.dag.json_like import (
    MAX_NESTING,
    NotJsonLike,
    encoded_size,
    entry_bound,
    to_json_like_sized,
)
from videodag_service.dag.plugin_calls import MAX_ERROR_MESSAGE_CHARS
from videodag_service.errors import NodeFailed

PIPELINE = """
id: raw
version: "1"
nodes:
  - id: raw
    plugin: test.raw_output
    params: {{kind: {kind}, on_frames: [1]}}
    inputs: {{index: frame.index}}
    on_error: {policy}
outputs:
  value: raw.value
"""


def raw_output_dag(tmp_path: Path, kind: str, policy: str) -> DagPipelineService:
    (tmp_path / "raw.yaml").write_text(textwrap.dedent(PIPELINE.format(kind=kind, policy=policy)))
    return DagPipelineService(load_pipeline_folder(tmp_path, make_registry()))


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"inner": value}
    return value


UNSENDABLE = {
    "lone_surrogate": "not JSON-like: a string that is not valid Unicode (a lone surrogate): 'caf\\udce9'",
    "huge_int": "not JSON-like: an integer of 401 digits, too large for a number",
    "holds_itself": f"not JSON-like: lists and mappings nested more than {MAX_NESTING} deep",
    "failing_to_json": "converting output 'value' failed: ValueError: no JSON for this one",
    "nan": "not JSON-like: non-finite number nan",
}


@pytest.mark.parametrize("kind", sorted(UNSENDABLE))
def test_an_output_that_cannot_be_sent_fails_the_run_naming_its_node(tmp_path: Path, kind: str) -> None:
    with raw_output_dag(tmp_path, kind, "fail").open_run("raw") as run:
        assert run.process({"frame_index": 0}) == {"value": 0}
        with pytest.raises(NodeFailed, match=r"node 'raw' \(test.raw_output\) failed on frame 1: ") as failure:
            run.process({"frame_index": 1})
    assert UNSENDABLE[kind] in str(failure.value)


@pytest.mark.parametrize("kind", sorted(UNSENDABLE))
def test_under_on_error_skip_an_output_that_cannot_be_sent_is_left_out(tmp_path: Path, kind: str) -> None:
    with raw_output_dag(tmp_path, kind, "skip").open_run("raw") as run:
        results = [run.process({"frame_index": index}) for index in range(3)]
    assert results[0] == {"value": 0} and results[2] == {"value": 2}
    assert "value" not in results[1]
    [error] = results[1]["errors"]
    assert error["node_id"] == "raw" and error["code"] == "INTERNAL"
    assert UNSENDABLE[kind] in error["message"]
    # What is left goes out as a FrameResult.
    [sent_error] = frame_result(1, 0.04, results[1]).node_errors
    assert sent_error.node_id == "raw"


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_plugin_exception_with_a_huge_message_is_reported_cut_short(tmp_path: Path, policy: str) -> None:
    with raw_output_dag(tmp_path, "long_failure", policy).open_run("raw") as run:
        run.process({"frame_index": 0})
        if policy == "fail":
            with pytest.raises(NodeFailed) as failure:
                run.process({"frame_index": 1})
            message = str(failure.value)
        else:
            message = run.process({"frame_index": 1})["errors"][0]["message"]
    assert message.endswith("… (100000 characters in all)")
    assert MAX_ERROR_MESSAGE_CHARS < len(message) < MAX_ERROR_MESSAGE_CHARS + 200


def test_a_result_nested_as_deep_as_allowed_reaches_clients_of_both_streams() -> None:
    result = frame_result(0, 0.0, {"value": to_json_like(nested(MAX_NESTING))})
    for response in (
        video_pipeline_service_pb2.UploadAndRunResponse(frame=result),
        video_pipeline_service_pb2.WatchJobResponse(frame=result),
    ):
        parsed = type(response).FromString(response.SerializeToString())
        assert parsed.frame.result == result.result
    with pytest.raises(NotJsonLike, match=f"nested more than {MAX_NESTING} deep"):
        to_json_like(nested(MAX_NESTING + 1))


def test_protobuf_parsers_refuse_a_result_nested_far_deeper_than_allowed() -> None:
    """Why there is a limit at all: a deep enough Struct cannot be read by a Python client."""
    response = video_pipeline_service_pb2.UploadAndRunResponse()
    response.frame.result.update({"value": nested(MAX_NESTING + 13)})
    wire = response.SerializeToString()
    with pytest.raises(DecodeError, match="MaxDepth"):
        video_pipeline_service_pb2.UploadAndRunResponse.FromString(wire)


SIZED = """
id: sized
version: "1"
nodes:
  - id: small
    plugin: test.padding
    params: {{size_bytes: 10}}
    inputs: {{index: frame.index}}
  - id: big
    plugin: test.padding
    params: {{size_bytes: {big}}}
    inputs: {{index: frame.index}}
    on_error: {policy}
outputs:
  small: small.text
  big: big.text
"""


def sized_dag(tmp_path: Path, big: int, policy: str, limit: int) -> DagPipelineService:
    (tmp_path / "sized.yaml").write_text(textwrap.dedent(SIZED.format(big=big, policy=policy)))
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry()))
    service.max_result_bytes = limit
    return service


def test_a_result_within_the_limit_goes_out_whole(tmp_path: Path) -> None:
    result = sized_dag(tmp_path, 1000, "fail", 2000).run_pipeline("sized", {"frame_index": 0})
    assert result == {"small": "x" * 10, "big": "x" * 1000}
    assert encoded_size(result) <= 2000


def test_a_result_over_the_limit_fails_the_node_of_its_largest_output(tmp_path: Path) -> None:
    with pytest.raises(NodeFailed, match=r"node 'big' \(test.padding\) failed on frame 0: output 'text' is ") as failed:
        sized_dag(tmp_path, 5000, "fail", 2000).run_pipeline("sized", {"frame_index": 0})
    assert "over the 2000 bytes a frame's result may take" in str(failed.value)
    assert "4 MiB by default, or the server's --max-message-bytes if lower" in str(failed.value)


def test_under_on_error_skip_the_largest_output_is_left_out_with_its_error(tmp_path: Path) -> None:
    result = sized_dag(tmp_path, 5000, "skip", 2000).run_pipeline("sized", {"frame_index": 0})
    assert result["small"] == "x" * 10 and "big" not in result
    [error] = result["errors"]
    assert (error["node_id"], error["code"]) == ("big", "RESOURCE_EXHAUSTED")
    assert encoded_size(result) <= 2000
    [sent_error] = frame_result(0, 0.0, result).node_errors
    assert sent_error.status.code == 8  # google.rpc.Code.RESOURCE_EXHAUSTED


def _deep(depth: int, inner: Any) -> Any:
    for level in range(depth):
        inner = [inner, 0] if level % 2 else {"k": inner}
    return inner


BOUND_SHAPES = {
    "one-digit numbers in a list": {"v": [0] * 5000},
    "one-letter keys": {"v": {chr(97 + i % 26) * (1 + i // 26): 0 for i in range(3000)}},
    "empty lists and mappings": {"v": [[], {}, [[]], [{}]] * 1000},
    "booleans and nulls": {"v": [True, False, None] * 2000},
    "empty and one-letter strings": {"v": ["", "a"] * 3000},
    "text beyond ASCII": {"v": ["é", "字", "😀"] * 2000},
    "nesting 20 deep around large values": {"v": _deep(MAX_NESTING - 1, [0] * 20000)},
    "nesting 20 deep around nothing": {"v": _deep(MAX_NESTING, 0)},
}


@pytest.mark.parametrize("shape", sorted(BOUND_SHAPES))
def test_the_bound_counted_while_converting_is_never_below_the_exact_size(shape: str) -> None:
    result, bound = {}, 0
    for name, value in BOUND_SHAPES[shape].items():  # as the engine converts outputs
        result[name], value_bound = to_json_like_sized(value)
        bound += entry_bound(name, value_bound)
    assert bound >= encoded_size(result)
    assert bound <= 4 * encoded_size(result) + 64, "and close enough to spare the exact measure"


def test_under_on_error_skip_a_node_with_an_output_that_cannot_be_sent_loses_all_its_outputs(tmp_path: Path) -> None:
    text = PIPELINE.format(kind="nan", policy="skip") + "  index: raw.index\n"
    (tmp_path / "raw.yaml").write_text(textwrap.dedent(text))
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry()))
    with service.open_run("raw") as run:
        results = [run.process({"frame_index": index}) for index in range(3)]
        timings = {timing.node_id: timing.errors for timing in run.node_timings()}
    assert results[0] == {"value": 0, "index": 0} and results[2] == {"value": 2, "index": 2}
    assert set(results[1]) == {"errors"}, "as when the node itself fails: none of its outputs"
    assert timings == {"raw": 1}, "the frame's failure counts as its node's error"


ERRORING = """
id: erroring
version: "1"
nodes:
{nodes}
  - id: small
    plugin: test.padding
    params: {{size_bytes: 10}}
    inputs: {{index: frame.index}}
outputs:
  small: small.text
"""
ERRORING_NODE = """
  - id: fail{number}
    plugin: test.raw_output
    params: {{kind: long_failure, on_frames: [0]}}
    inputs: {{index: frame.index}}
    on_error: skip
"""


def erroring_dag(tmp_path: Path, nodes: int, limit: int) -> DagPipelineService:
    text = ERRORING.format(nodes="".join(ERRORING_NODE.format(number=n) for n in range(nodes)))
    (tmp_path / "erroring.yaml").write_text(textwrap.dedent(text))
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry()))
    service.max_result_bytes = limit
    return service


def test_errors_too_large_to_send_are_cut_short_rather_than_blaming_an_output(tmp_path: Path) -> None:
    result = erroring_dag(tmp_path, 20, 20_000).run_pipeline("erroring", {"frame_index": 0})
    assert result["small"] == "x" * 10, "the small output is not to blame"
    assert len(result["errors"]) == 20
    assert all(len(error["message"]) == 200 for error in result["errors"])
    assert encoded_size(result) <= 20_000


def test_errors_too_large_to_send_even_cut_short_fail_the_run(tmp_path: Path) -> None:
    with pytest.raises(NodeFailed, match=r"node 'fail0' .* the frame's 20 node errors take \d+ bytes as sent"):
        erroring_dag(tmp_path, 20, 3_000).run_pipeline("erroring", {"frame_index": 0})
