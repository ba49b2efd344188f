"""Status codes and `google.rpc` details become the named exceptions, also mid-stream."""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import grpc
import pytest
from fake_servicer import (
    AbortWith,
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    WaitForCancellation,
    frame_response,
    rich_status,
    video_info_response,
)
from google.rpc import code_pb2

import videodag_client
from fakes.waiting import wait_until
from videodag_client import (
    DataLoss,
    DeadlineExceeded,
    FieldViolation,
    FrameResult,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ResourceInfo,
    Unavailable,
    Unknown,
    UploadReceived,
    VideodagClient,
    VideodagError,
    VideoOpened,
    from_grpc_error,
)

_ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


def _class_name(code: grpc.StatusCode) -> str:
    return "".join(word.capitalize() for word in code.name.split("_"))


def test_invalid_argument_carries_reason_metadata_and_field_violations(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.abort_after_config = rich_status(
        code_pb2.INVALID_ARGUMENT,
        "invalid options: options.frame_stride: must not be negative",
        reason="INVALID_OPTIONS",
        metadata={"pipeline_id": "motion_v1"},
        field_violations=[("options.frame_stride", "must not be negative")],
    )

    with pytest.raises(InvalidArgument) as raised:
        list(client.upload_and_run(video_path, "motion_v1"))

    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "invalid options: options.frame_stride: must not be negative"
    assert (error.reason, error.domain) == ("INVALID_OPTIONS", "videodag.dev")
    assert error.metadata == {"pipeline_id": "motion_v1"}
    assert error.field_violations == (FieldViolation("options.frame_stride", "must not be negative"),)
    assert error.retry_after is None
    assert str(error) == "INVALID_ARGUMENT: invalid options: options.frame_stride: must not be negative"
    assert isinstance(error.__cause__, grpc.RpcError)


def test_error_after_some_frames_is_raised_from_the_iteration(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(),
        frame_response(0, 25.0, {"motion": 0.0}),
        frame_response(1, 25.0, {"motion": 0.2}),
        AbortWith(
            rich_status(
                code_pb2.INTERNAL,
                "node 'detect' (ssdlite.detect_people) failed on frame 2: boom",
                reason="NODE_FAILED",
                metadata={"node_id": "detect", "frame_index": "2"},
            )
        ),
    ]
    received = []

    with pytest.raises(Internal) as raised:
        for event in client.upload_and_run(video_path, "people_tracking_v1"):
            received.append(event)

    assert [type(event) for event in received] == [UploadReceived, VideoOpened, FrameResult, FrameResult]
    assert [event.frame_index for event in received if isinstance(event, FrameResult)] == [0, 1]
    assert raised.value.reason == "NODE_FAILED"
    assert raised.value.metadata == {"node_id": "detect", "frame_index": "2"}


def test_unknown_pipeline_is_not_found_with_the_resource(client: VideodagClient) -> None:
    with pytest.raises(NotFound) as raised:
        client.get_pipeline("no_such_pipeline")

    assert raised.value.reason == "PIPELINE_NOT_FOUND"
    assert raised.value.resource == ResourceInfo("videodag.v1.Pipeline", "no_such_pipeline")
    assert "known pipelines: motion_v1, people_tracking_v1" in raised.value.message


def test_retry_hint_becomes_retry_after_seconds(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.abort_after_config = rich_status(
        code_pb2.RESOURCE_EXHAUSTED, "too many concurrent runs (4)", reason="TOO_MANY_RUNS", retry_after_seconds=2.5
    )

    with pytest.raises(ResourceExhausted) as raised:
        list(client.upload_and_run(video_path, "motion_v1"))

    assert raised.value.retry_after == 2.5
    assert raised.value.reason == "TOO_MANY_RUNS"


@pytest.mark.parametrize("code", _ERROR_CODES, ids=lambda code: code.name)
def test_every_status_code_has_the_exception_named_after_it(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, code: grpc.StatusCode
) -> None:
    servicer.abort_after_config = rich_status(code.value[0], f"failed with {code.name}")

    with pytest.raises(VideodagError) as raised:
        list(client.upload_and_run(video_path, "motion_v1", checksum=False))

    assert type(raised.value) is getattr(videodag_client, _class_name(code))
    assert raised.value.code is code
    assert raised.value.message == f"failed with {code.name}"


def test_early_failure_does_not_wait_for_a_request_stream_that_never_ends(
    client: VideodagClient, servicer: FakeVideoPipelineServicer
) -> None:
    servicer.abort_after_config = rich_status(
        code_pb2.RESOURCE_EXHAUSTED, "upload too large", reason="UPLOAD_TOO_LARGE"
    )
    read_fd, write_fd = os.pipe()  # nothing is written: a read blocks until the write end closes
    endless = os.fdopen(read_fd, "rb")
    try:
        started = time.monotonic()
        with pytest.raises(ResourceExhausted):
            list(client.upload_and_run(endless, "motion_v1"))
        assert time.monotonic() - started < 10
    finally:
        # gRPC's request thread may still be blocked in read(): end the pipe first, or closing
        # the reader would wait for that read forever.
        os.close(write_fd)
        endless.close()


def test_size_mismatch_is_data_loss(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [
        AbortWith(rich_status(code_pb2.DATA_LOSS, "declared 10 bytes, received 300001", reason="UPLOAD_CORRUPTED"))
    ]

    with pytest.raises(DataLoss, match="declared 10 bytes"):
        list(client.upload_and_run(video_path, "motion_v1"))


def test_timeout_becomes_deadline_exceeded(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [AcknowledgeUpload(), WaitForCancellation(timeout_seconds=20)]

    with pytest.raises(DeadlineExceeded):
        list(client.upload_and_run(video_path, "motion_v1", timeout=0.5))


def test_error_in_the_progress_callback_is_raised_as_itself(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    def explode(bytes_sent: int, total: int | None) -> None:
        raise RuntimeError(f"progress display broke at {bytes_sent}")

    with pytest.raises(RuntimeError, match="progress display broke"):
        list(client.upload_and_run(video_path, "motion_v1", chunk_size=64 * 1024, on_upload_progress=explode))


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt])
def test_a_progress_callback_quitting_the_program_ends_the_call_at_once(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, raised: type[BaseException]
) -> None:
    def quit_now(bytes_sent: int, total: int | None) -> None:
        raise raised("the user asked to quit")

    started = time.monotonic()
    with pytest.raises(raised, match="the user asked to quit"):  # not the call's deadline, 10 s later
        list(client.upload_and_run(video_path, "motion_v1", chunk_size=64 * 1024, on_upload_progress=quit_now,
                                   timeout=10))
    assert time.monotonic() - started < 5
    # The server's handler saw the call end, one way or the other, instead of waiting for the rest of
    # the upload; or, cancelled that soon, the call never reached it.
    assert wait_until(
        lambda: servicer.cancelled.is_set() or servicer.upload_finished.is_set() or not servicer.requests, timeout=5
    )


def test_server_that_is_not_there_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with VideodagClient(f"127.0.0.1:{free_port}", timeout=10) as client, pytest.raises(Unavailable):
        client.list_pipelines()


def test_error_without_status_details_still_maps_by_code(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [AcknowledgeUpload(), AbortWith(_plain_status(grpc.StatusCode.INTERNAL, "plain"))]

    with pytest.raises(Internal) as raised:
        list(client.upload_and_run(video_path, "motion_v1"))

    assert (raised.value.reason, raised.value.metadata, raised.value.field_violations) == ("", {}, ())


def test_rpc_error_that_is_not_a_call_becomes_unknown() -> None:
    error = from_grpc_error(grpc.RpcError("channel exploded"))

    assert isinstance(error, Unknown)
    assert error.code is grpc.StatusCode.UNKNOWN
    assert error.message == "channel exploded"


class _PlainStatus(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = None


def _plain_status(code: grpc.StatusCode, details: str) -> grpc.Status:
    return _PlainStatus(code, details)


def test_a_call_given_an_infinite_timeout_has_no_deadline_though_the_client_has_one(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    """None per call takes the client's default, so `math.inf` is how one call goes without."""
    servicer.run_script = [AcknowledgeUpload(), WaitForCancellation(timeout_seconds=1.0)]
    with VideodagClient(target, timeout=0.3) as client:
        with pytest.raises(DeadlineExceeded):
            list(client.upload_and_run(video_path, "motion_v1"))
        with client.upload_and_run(video_path, "motion_v1", timeout=math.inf) as stream:
            assert type(next(stream)).__name__ == "UploadReceived"
            with pytest.raises(VideodagError) as ended:  # by the server after its 1 s, not by a deadline
                next(stream)
        assert ended.value.reason == "RUN_ENDED_WITHOUT_SUMMARY"
        assert "motion_v1" in [pipeline.id for pipeline in client.list_pipelines(timeout=math.inf)]
        with pytest.raises(DeadlineExceeded):  # only +inf: -inf is a deadline passed, as any negative one
            client.list_pipelines(timeout=-math.inf)


def test_a_timeout_of_zero_is_a_deadline_passed_for_every_call(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    """A unary call given 0 went through whenever the server answered within the instant, while a
    streaming one failed: every call now fails alike, as with a negative timeout."""
    with VideodagClient(target) as client:
        for _ in range(20):
            with pytest.raises(DeadlineExceeded):
                client.list_pipelines(timeout=0)
        with pytest.raises(DeadlineExceeded):
            list(client.upload_and_run(video_path, "motion_v1", timeout=0))
        with pytest.raises(DeadlineExceeded):
            client.list_pipelines(timeout=math.nan)
    with VideodagClient(target, timeout=0) as client, pytest.raises(DeadlineExceeded):
        client.list_pipelines()


def test_numbers_a_request_cannot_hold_are_refused_as_invalid_arguments_naming_the_field(
    client: VideodagClient,
) -> None:
    """As `RunOptions` already were: protobuf's bare ValueError escaped `except VideodagError`."""
    with pytest.raises(InvalidArgument) as listing:
        client.list_jobs(page_size=2**31)
    with pytest.raises(InvalidArgument) as watching:
        client.watch_job("some-job", after_frame_index=2**63)  # at the call, not at the first next()
    for raised, field in ((listing, "page_size"), (watching, "after_frame_index")):
        assert raised.value.reason == "INVALID_OPTIONS"
        assert [violation.field for violation in raised.value.field_violations] == [field]
        assert "out of its range" in raised.value.field_violations[0].description


def test_a_bool_for_a_page_size_or_a_frame_index_is_a_type_error(client: VideodagClient) -> None:
    """protobuf 5, which the client admits, would send True as 1."""
    with pytest.raises(TypeError, match=r"^page_size must be a number, not True$"):
        client.list_jobs(page_size=True)
    with pytest.raises(TypeError, match=r"^after_frame_index must be a number, not False$"):
        client.watch_job("some-job", after_frame_index=False)
