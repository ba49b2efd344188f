"""Request messages protobuf cannot parse, as hand-built or foreign-language clients send them:
refused with INVALID_ARGUMENT (reason MALFORMED_REQUEST) saying why, not INTERNAL with an
ERROR traceback in the server's log, and leaving no upload behind."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from harness import ServerFactory, ServerHarness

from videodag.v1 import run_pb2, video_pipeline_service_pb2

SERVICE = "/videodag.v1.VideoPipelineService/"
# A string field (field 1 of GetPipelineRequest, GetJobRequest, WatchJobRequest) holding a
# Latin-1 byte: protobuf requires UTF-8.
NOT_UTF8_ID = b"\x0a\x0fframe_stats_v1\xff"
# A chunk message whose length says more bytes than follow.
CUT_CHUNK = b"\x12\xff\xff\x03abc"


def _identity(message: bytes) -> bytes:
    return message


def _config(pipeline_id: str = "frame_stats_v1", file_name: str = "clip.avi") -> bytes:
    request = video_pipeline_service_pb2.UploadAndRunRequest(
        config=run_pb2.RunConfig(pipeline_id=pipeline_id, file_name=file_name)
    )
    return request.SerializeToString()


def _job_config() -> bytes:
    config = video_pipeline_service_pb2.SubmitJobConfig(
        run_config=run_pb2.RunConfig(pipeline_id="frame_stats_v1", file_name="clip.avi")
    )
    return video_pipeline_service_pb2.SubmitJobRequest(config=config).SerializeToString()


def _chunk(data: bytes) -> bytes:
    return video_pipeline_service_pb2.UploadAndRunRequest(chunk=data).SerializeToString()


def _refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def _assert_malformed(error: grpc.RpcError, message_type: str) -> None:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.details().startswith(f"malformed request: Error parsing message with type '{message_type}'")
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "MALFORMED_REQUEST"


@pytest.fixture
def server(make_server: ServerFactory) -> ServerHarness:
    return make_server()


@pytest.fixture
def channel(server: ServerHarness) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


@pytest.mark.parametrize(
    ("method", "message_type"),
    [("GetPipeline", "videodag.v1.GetPipelineRequest"), ("GetJob", "videodag.v1.GetJobRequest")],
)
def test_a_unary_request_that_is_not_utf8_is_invalid_argument_saying_so(
    channel: grpc.Channel, method: str, message_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = channel.unary_unary(SERVICE + method, request_serializer=_identity, response_deserializer=_identity)
    error = _refusal(lambda: call(NOT_UTF8_ID, timeout=10))
    _assert_malformed(error, message_type)
    assert "String field had bad UTF-8" in error.details()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_watch_of_a_job_id_that_is_not_utf8_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_stream(SERVICE + "WatchJob", request_serializer=_identity, response_deserializer=_identity)
    _assert_malformed(_refusal(lambda: list(call(NOT_UTF8_ID, timeout=10))), "videodag.v1.WatchJobRequest")


@pytest.mark.parametrize("where", ["first", "after a chunk"])
def test_an_upload_with_a_message_that_cannot_be_parsed_is_invalid_argument_and_leaves_nothing(
    server: ServerHarness, channel: grpc.Channel, make_video, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    video = make_video(6).read_bytes()
    requests = [CUT_CHUNK] if where == "first" else [_config(), _chunk(video[:1000]), CUT_CHUNK, _chunk(video[1000:])]
    call = channel.stream_stream(SERVICE + "UploadAndRun", request_serializer=_identity,
                                 response_deserializer=_identity)
    _assert_malformed(_refusal(lambda: list(call(iter(requests), timeout=20))), "videodag.v1.UploadAndRunRequest")
    assert server.uploads_left_after() == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_job_submission_with_a_message_that_cannot_be_parsed_is_invalid_argument_and_queues_nothing(
    server: ServerHarness, channel: grpc.Channel, make_video
) -> None:
    video = make_video(6).read_bytes()
    call = channel.stream_unary(SERVICE + "SubmitJob", request_serializer=_identity, response_deserializer=_identity)
    requests = [_job_config(), _chunk(video[:1000]), CUT_CHUNK]
    _assert_malformed(_refusal(lambda: call(iter(requests), timeout=20)), "videodag.v1.SubmitJobRequest")
    assert server.client.list_jobs().jobs == ()
    assert server.uploads_left_after() == []


def test_health_checks_are_left_to_grpc(channel: grpc.Channel) -> None:
    """Only the service's own methods are refused this way; gRPC's health service keeps its behaviour."""
    call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=_identity,
                               response_deserializer=_identity)
    assert _refusal(lambda: call(b"\x0a\x01\xff", timeout=10)).code() is grpc.StatusCode.INTERNAL


def test_a_file_name_that_is_not_utf8_in_a_run_config_is_invalid_argument(channel: grpc.Channel) -> None:
    """RunConfig.file_name (field 3) with a Latin-1 name, as an older C++ or Go client can send it."""
    run_config = b"\x0a\x0eframe_stats_v1" + b"\x1a\x0avid\xe9o.mp4"
    first = b"\x0a" + bytes([len(run_config)]) + run_config
    call = channel.stream_stream(SERVICE + "UploadAndRun", request_serializer=_identity,
                                 response_deserializer=_identity)
    _assert_malformed(_refusal(lambda: list(call(iter([first]), timeout=20))), "videodag.v1.UploadAndRunRequest")
