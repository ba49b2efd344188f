"""Very long ids and file names in a request still get their typed refusal, details and all.

An error echoes what it is about (the pipeline id, the job id, the file's name) in its
message, its ErrorInfo and its ResourceInfo. Echoed whole, a 6,000-character id made the
trailers larger than a gRPC client accepts (8 KiB by default), which then reported its own
RESOURCE_EXHAUSTED with no details in place of the server's status. Every text of a status
is now cut to a bounded length.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from hardening_support import chunks, config, raw_call
from harness import ServerHarness

from fakes.media import garbage_bytes
from videodag.v1 import video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_service.convert import MAX_MESSAGE_BYTES, clipped
from videodag_service.errors import MAX_DETAIL_BYTES

LONG = 6000


def _status(error: grpc.Call) -> status_pb2.Status:
    status = rpc_status.from_call(error)
    assert status is not None, error.details()
    return status


def _info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def _assert_bounded(status: status_pb2.Status) -> None:
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES
    for value in _info(status).metadata.values():
        assert len(value.encode()) <= MAX_DETAIL_BYTES


def test_a_very_long_pipeline_id_is_refused_as_invalid_with_its_details(server: ServerHarness) -> None:
    with grpc.insecure_channel(server.target) as channel:
        outcome = raw_call(channel, [config("a" * LONG), *chunks(b"\0" * 1000)])
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetPipeline(video_pipeline_service_pb2.GetPipelineRequest(pipeline_id="a" * LONG), timeout=30)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.details
    assert outcome.details.endswith(f"has {LONG} characters; ids have at most 128")
    error: grpc.Call = raised.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error)
    assert _info(status).reason == "INVALID_PIPELINE_ID"
    _assert_bounded(status)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert [violation.field for violation in bad_request.field_violations] == ["pipeline_id"]
    assert len(bad_request.field_violations[0].description.encode()) <= MAX_DETAIL_BYTES
    assert server.leftover_uploads() == []


def test_an_unknown_very_long_job_id_is_not_found_with_its_details(server: ServerHarness) -> None:
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).GetJob(
            video_pipeline_service_pb2.GetJobRequest(job_id="j" * 20 * LONG), timeout=30
        )
    error: grpc.Call = raised.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.NOT_FOUND
    status = _status(error)
    assert _info(status).reason == "JOB_NOT_FOUND"
    _assert_bounded(status)
    resource = error_details_pb2.ResourceInfo()
    assert status.details[1].Unpack(resource)
    assert resource.resource_name == clipped("j" * 20 * LONG, MAX_DETAIL_BYTES)
    assert _info(status).metadata["job_id"] == clipped("j" * 20 * LONG, MAX_DETAIL_BYTES)


def test_an_empty_job_id_is_named_as_missing(server: ServerHarness) -> None:
    """It was "unknown job ''", where an empty pipeline id is named as missing."""
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).CancelJob(
            video_pipeline_service_pb2.CancelJobRequest(job_id=""), timeout=30
        )
    error: grpc.Call = raised.value  # type: ignore[assignment]
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no job_id given (it is required)")
    assert _info(_status(error)).metadata["job_id"] == ""


def test_an_unreadable_upload_with_a_very_long_file_name_is_refused_with_its_details(server: ServerHarness) -> None:
    # The longest name a config may carry (1024 characters), two bytes each in UTF-8: the cut
    # falls on a character's edge.
    name = "ü" * 1020 + ".mp4"
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        list(stub.UploadAndRun(iter([config(file_name=name), *chunks(garbage_bytes(50_000))]), timeout=60))
    error: grpc.Call = raised.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error)
    assert _info(status).reason == "VIDEO_UNREADABLE"
    # The name is shown by its start and end, so the reason after it is not cut off.
    assert status.message.startswith(f"Unable to read video file '{'ü' * 60}…{'ü' * 56}.mp4': not a video")
    assert server.leftover_uploads() == []


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("abcdefghijkl", 10, "abcdefg…"),  # "…" takes 3 bytes
        ("ééééé", 8, "éé…"),  # 2 bytes a character: no half character is kept
    ],
)
def test_clipped_keeps_whole_characters_within_the_limit(text: str, limit: int, expected: str) -> None:
    assert clipped(text, limit) == expected
    assert len(clipped(text, limit).encode()) <= limit
