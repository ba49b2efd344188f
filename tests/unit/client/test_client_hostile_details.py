"""A server's error details that do not parse, or say a delay past any sane one: the error is still the
server's `VideodagError`, with its code and message, never a protobuf DecodeError or an OverflowError."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from fake_servicer import FakeVideoPipelineServicer, serving
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from videodag.v1 import video_pipeline_service_pb2
from videodag_client import (
    AsyncVideodagClient,
    InvalidArgument,
    ResourceExhausted,
    VideodagClient,
)
from videodag_client._errors import error_from_status
from videodag_client.cli import _exit_codes, main

_DETAILS_TRAILER = "grpc-status-details-bin"
_DAY = 86_400.0


class RefusingServicer(FakeVideoPipelineServicer):
    """ListPipelines fails with `status`, whose serialized form goes in the details trailer unless
    `trailer` (any bytes at all) replaces it."""

    def __init__(self) -> None:
        super().__init__()
        self.status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad request")
        self.trailer: bytes | None = None

    def ListPipelines(
        self, request: video_pipeline_service_pb2.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.ListPipelinesResponse:
        trailer = self.trailer if self.trailer is not None else self.status.SerializeToString()
        context.set_trailing_metadata(((_DETAILS_TRAILER, trailer),))
        context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == self.status.code)),
                      self.status.message)


@pytest.fixture
def refusing() -> RefusingServicer:
    return RefusingServicer()


@pytest.fixture
def refusing_target(refusing: RefusingServicer) -> Iterator[str]:
    with serving(refusing) as address:
        yield address


def _packed(*details: object) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        container = any_pb2.Any()
        container.Pack(detail)
        packed.append(container)
    return packed


def _garbage(type_name: str) -> any_pb2.Any:
    """An Any naming a type whose bytes are not one (a varint that never ends)."""
    return any_pb2.Any(type_url=f"type.googleapis.com/{type_name}", value=b"\xff\xff\xff\xff")


def _retry_info(seconds: int, nanos: int = 0) -> error_details_pb2.RetryInfo:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.seconds = seconds
    retry.retry_delay.nanos = nanos
    return retry


def _status(code: int, message: str, details: list[any_pb2.Any]) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=details)


def test_a_detail_that_does_not_parse_is_left_out_and_the_others_kept(
    refusing: RefusingServicer, refusing_target: str
) -> None:
    refusing.status.details.extend([
        _garbage("google.rpc.ErrorInfo"),
        *_packed(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="page_size", description="must not be negative")
        ])),
    ])
    with VideodagClient(refusing_target, timeout=10) as client, pytest.raises(InvalidArgument) as raised:
        client.list_pipelines()

    assert raised.value.message == "bad request"
    assert raised.value.reason == ""  # the ErrorInfo that did not parse
    assert [violation.field for violation in raised.value.field_violations] == ["page_size"]


def test_a_details_trailer_that_is_not_a_status_leaves_the_code_and_message(
    refusing: RefusingServicer, refusing_target: str
) -> None:
    refusing.trailer = b"\xff\xfe\xfd not a Status"
    with VideodagClient(refusing_target, timeout=10) as client, pytest.raises(InvalidArgument) as raised:
        client.list_pipelines()

    assert str(raised.value) == "INVALID_ARGUMENT: bad request"
    assert (raised.value.reason, raised.value.field_violations) == ("", ())


def test_the_async_client_raises_the_same_error_for_details_that_do_not_parse(
    refusing: RefusingServicer, refusing_target: str
) -> None:
    refusing.status.details.append(_garbage("google.rpc.ErrorInfo"))

    async def list_pipelines() -> None:
        async with AsyncVideodagClient(refusing_target, timeout=10) as client:
            await client.list_pipelines()

    with pytest.raises(InvalidArgument, match="bad request"):
        asyncio.run(list_pipelines())


@pytest.mark.parametrize(
    ("seconds", "nanos", "retry_after"),
    [
        (2**62, 0, _DAY),  # past a Duration's range: timedelta overflowed
        (10**11, 0, _DAY),  # a valid Duration, 3,000 years
        (-1_000_000, 0, 0.0),  # passed already: retry now
        (2, 500_000_000, 2.5),
        (0, 0, 0.0),
    ],
)
def test_a_retry_hint_reads_as_0_to_a_day_of_seconds(
    refusing: RefusingServicer, refusing_target: str, seconds: int, nanos: int, retry_after: float
) -> None:
    refusing.status = _status(code_pb2.RESOURCE_EXHAUSTED, "full", _packed(_retry_info(seconds, nanos)))
    with VideodagClient(refusing_target, timeout=10) as client, pytest.raises(ResourceExhausted) as raised:
        client.list_pipelines()

    assert raised.value.retry_after == retry_after


@pytest.mark.parametrize("trailer", [None, b"\x08\x03\x12garbage"])
def test_the_command_prints_the_error_for_details_it_cannot_read(
    refusing: RefusingServicer, refusing_target: str, capsys: pytest.CaptureFixture[str], trailer: bytes | None
) -> None:
    refusing.status.details.append(_garbage("google.rpc.BadRequest"))
    refusing.trailer = trailer

    assert main(["--server", refusing_target, "pipelines"]) == _exit_codes.INVALID_ARGUMENT
    assert capsys.readouterr().err == "error: INVALID_ARGUMENT: bad request\n"


def test_the_command_prints_a_retry_hint_past_any_sane_one_as_a_day(
    refusing: RefusingServicer, refusing_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    refusing.status = _status(code_pb2.RESOURCE_EXHAUSTED, "full", _packed(_retry_info(2**62)))

    assert main(["--server", refusing_target, "pipelines"]) == _exit_codes.RESOURCE_EXHAUSTED
    assert capsys.readouterr().err == "error: RESOURCE_EXHAUSTED: full\n  retry after 86400 s\n"


def test_a_failed_jobs_error_keeps_what_parses_of_its_details() -> None:
    status = _status(code_pb2.INTERNAL, "node failed", [
        _garbage("google.rpc.RetryInfo"),
        *_packed(error_details_pb2.ErrorInfo(reason="NODE_FAILED", domain="videodag.dev"), _retry_info(2**62)),
    ])

    error = error_from_status(status)

    assert (error.code, error.message, error.reason, error.retry_after) == (
        grpc.StatusCode.INTERNAL, "node failed", "NODE_FAILED", _DAY
    )
