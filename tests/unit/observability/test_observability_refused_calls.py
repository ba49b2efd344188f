"""Calls the bearer-token check refuses: logged with the call's request id, counted like any call.

A real gRPC server over loopback, its interceptors in the server's order: the request context
outermost, the token check inside it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from fakes.logs import json_log_lines
from videodag_service.auth import BearerTokenInterceptor
from videodag_service.observability import ServerMetrics
from videodag_service.observability.interceptors import server_interceptors

SERVICE = "test.Guarded"
UNARY = f"/{SERVICE}/Unary"
UPLOAD = f"/{SERVICE}/Upload"


def _identity(payload: bytes) -> bytes:
    return payload


def _handlers() -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
        "Upload": grpc.stream_stream_rpc_method_handler(upload, _identity, _identity),
    })


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Root logging sent to a buffer as JSON lines; the previous handlers come back afterwards."""
    with json_log_lines("INFO") as stream:
        yield stream


@pytest.fixture
def guarded() -> Iterator[tuple[grpc.Channel, ServerMetrics]]:
    metrics = ServerMetrics()
    interceptors = [*server_interceptors(metrics), BearerTokenInterceptor(["secret"])]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, metrics
    channel.close()
    server.stop(0).wait()


def _entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _lines_of(entries: list[dict[str, object]], method: str) -> tuple[dict[str, object], dict[str, object]]:
    """The refusal's line and the call's end line, each exactly once."""
    (refusal,) = [e for e in entries if str(e["message"]).startswith(f"refused {method}:")]
    (ended,) = [e for e in entries if e.get("grpc_method") == method]
    return refusal, ended


def test_a_refusal_is_logged_with_the_callers_request_id(guarded, log_stream: io.StringIO) -> None:
    channel, metrics = guarded
    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(UNARY)(b"hi", metadata=[("x-request-id", "caller-7")])

    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    refusal, ended = _lines_of(_entries(log_stream), UNARY)
    assert "missing bearer token" in str(refusal["message"])
    assert refusal["request_id"] == ended["request_id"] == "caller-7"
    assert ended["grpc_code"] == "UNAUTHENTICATED"
    assert metrics.registry.get_sample_value(
        "videodag_grpc_calls_total", {"method": UNARY, "code": "UNAUTHENTICATED"}
    ) == 1


def test_a_refused_stream_without_an_id_logs_the_one_sent_back(guarded, log_stream: io.StringIO) -> None:
    channel, _ = guarded
    responses = channel.stream_stream(UPLOAD)(iter([b"chunk"]), metadata=[("authorization", "Bearer wrong")])
    with pytest.raises(grpc.RpcError) as refused:
        list(responses)

    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    sent_back = dict(refused.value.trailing_metadata())["x-request-id"]
    refusal, ended = _lines_of(_entries(log_stream), UPLOAD)
    assert "invalid bearer token" in str(refusal["message"])
    assert refusal["request_id"] == ended["request_id"] == sent_back


def test_an_accepted_call_logs_no_refusal(guarded, log_stream: io.StringIO) -> None:
    channel, _ = guarded
    assert channel.unary_unary(UNARY)(b"hi", metadata=[("authorization", "Bearer secret")]) == b"hi"
    assert not [e for e in _entries(log_stream) if str(e["message"]).startswith("refused")]
