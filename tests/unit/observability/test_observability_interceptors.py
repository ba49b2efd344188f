"""The request-context interceptor on a real gRPC server over loopback, and the tracing switch."""

from __future__ import annotations

import json
import re
import sys
import threading
import types
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from videodag_service.observability import ServerMetrics, current_request_id, tracing
from videodag_service.observability.interceptors import RequestContextInterceptor, server_interceptors
from videodag_service.observability.tracing import TracingUnavailable, tracing_interceptors

SERVICE = "test.Echo"


def _identity(payload: bytes) -> bytes:
    return payload


@dataclass
class Recorded:
    """What the handlers saw, read by the tests after each call."""

    request_ids: list[str | None] = field(default_factory=list)
    stream_started: threading.Event = field(default_factory=threading.Event)
    stream_release: threading.Event = field(default_factory=threading.Event)


def _handlers(recorded: Recorded) -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        recorded.request_ids.append(current_request_id())
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request == b"crash":
            raise RuntimeError("handler bug")
        return request

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for index, chunk in enumerate(requests):
            recorded.request_ids.append(current_request_id())
            yield b"%d:%d" % (index, len(chunk))
            if index == 0:
                recorded.stream_started.set()
                recorded.stream_release.wait(5)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
        "Upload": grpc.stream_stream_rpc_method_handler(upload, _identity, _identity),
    })


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, ServerMetrics, Recorded]]:
    metrics, recorded = ServerMetrics(), Recorded()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=server_interceptors(metrics))
    server.add_generic_rpc_handlers((_handlers(recorded),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    channel.address = f"127.0.0.1:{port}"  # type: ignore[attr-defined]  # for tests that need a channel of their own
    yield channel, metrics, recorded
    channel.close()
    server.stop(0).wait()


def _calls(metrics: ServerMetrics, method: str, code: str) -> float:
    return metrics.registry.get_sample_value("videodag_grpc_calls_total", {"method": method, "code": code}) or 0.0


def test_the_callers_request_id_is_current_in_the_handler_and_sent_back(served) -> None:
    channel, metrics, recorded = served
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    response, call = unary.with_call(b"hi", metadata=[("x-request-id", "caller-7")])

    assert response == b"hi"
    assert recorded.request_ids == ["caller-7"]
    assert ("x-request-id", "caller-7") in call.initial_metadata()
    assert _calls(metrics, f"/{SERVICE}/Unary", "OK") == 1


def test_a_call_without_an_id_gets_a_new_one_per_call(served) -> None:
    channel, _, recorded = served
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    _, first = unary.with_call(b"a")
    _, second = unary.with_call(b"b")

    first_id, second_id = recorded.request_ids
    assert first_id and second_id and first_id != second_id
    assert dict(first.initial_metadata())["x-request-id"] == first_id
    assert dict(second.initial_metadata())["x-request-id"] == second_id


def test_aborted_and_crashed_calls_are_counted_with_their_status(served) -> None:
    channel, metrics, _ = served
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    with pytest.raises(grpc.RpcError) as not_found:
        unary(b"missing")
    with pytest.raises(grpc.RpcError) as crashed:
        unary(b"crash")

    assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
    assert crashed.value.code() is grpc.StatusCode.UNKNOWN
    method = f"/{SERVICE}/Unary"
    counted = {code: _calls(metrics, method, code) for code in ("NOT_FOUND", "UNKNOWN", "OK")}
    assert counted == {"NOT_FOUND": 1, "UNKNOWN": 1, "OK": 0}
    count = metrics.registry.get_sample_value("videodag_grpc_call_duration_seconds_count", {"method": method})
    assert count == 2


def test_a_stream_keeps_its_id_while_responses_are_produced_and_is_active_meanwhile(served) -> None:
    channel, metrics, recorded = served
    method = f"/{SERVICE}/Upload"
    upload = channel.stream_stream(method)
    responses = upload(iter([b"config", b"12345", b"678"]), metadata=[("x-request-id", "stream-1")])
    assert recorded.stream_started.wait(5)
    active = metrics.registry.get_sample_value("videodag_active_streams", {"method": method})
    recorded.stream_release.set()

    assert list(responses) == [b"0:6", b"1:5", b"2:3"]
    assert active == 1
    assert recorded.request_ids == ["stream-1"] * 3
    assert metrics.registry.get_sample_value("videodag_active_streams", {"method": method}) == 0
    assert _calls(metrics, method, "OK") == 1


def test_the_id_goes_back_with_the_first_response_and_in_the_trailers(served) -> None:
    channel, _, recorded = served
    responses = channel.stream_stream(f"/{SERVICE}/Upload")(iter([b"a", b"b"]), metadata=[("x-request-id", "s-2")])
    recorded.stream_release.set()

    assert list(responses) == [b"0:1", b"1:1"]
    assert ("x-request-id", "s-2") in responses.initial_metadata()
    assert ("x-request-id", "s-2") in responses.trailing_metadata()


def test_a_refusal_is_trailers_only_so_a_retry_policy_retries_it(served) -> None:
    """Headers sent at the call's start (the id, once) made every refusal a committed call, which
    no gRPC client's `retryPolicy` retries: the refused call was tried once."""
    channel, _, recorded = served
    retrying = json.dumps({"methodConfig": [{
        "name": [{"service": SERVICE}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.01s",
                        "backoffMultiplier": 1, "retryableStatusCodes": ["NOT_FOUND"]},
    }]})
    retried = grpc.insecure_channel(channel.address, options=[("grpc.service_config", retrying)])
    with retried, pytest.raises(grpc.RpcError) as refused:
        retried.unary_unary(f"/{SERVICE}/Unary")(b"missing", metadata=[("x-request-id", "r-1")])

    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert recorded.request_ids == ["r-1"] * 3
    assert ("x-request-id", "r-1") in refused.value.trailing_metadata()
    assert "x-request-id" not in dict(refused.value.initial_metadata())


def test_an_unknown_method_is_left_to_grpc(served) -> None:
    channel, metrics, _ = served
    with pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(f"/{SERVICE}/Nope")(b"")
    assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert _calls(metrics, f"/{SERVICE}/Nope", "UNIMPLEMENTED") == 0


def test_tracing_is_off_by_default() -> None:
    assert tracing_interceptors(False) == []
    interceptors = server_interceptors(None)
    assert len(interceptors) == 1 and isinstance(interceptors[0], RequestContextInterceptor)


def test_tracing_without_opentelemetry_installed_refuses_with_a_clear_message(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.grpc", None)  # import now fails
    with pytest.raises(TracingUnavailable, match=r"pip install 'videodag\[tracing\]'"):
        server_interceptors(ServerMetrics(), tracing=True)


def test_tracing_uses_opentelemetrys_interceptor_outermost(monkeypatch) -> None:
    class SpanInterceptor(grpc.ServerInterceptor):
        def __init__(self, tracer_provider=None, filter_=None) -> None:
            self.tracer_provider = tracer_provider

        def intercept_service(self, continuation, handler_call_details):
            return continuation(handler_call_details)

    instrumentation = types.ModuleType("opentelemetry.instrumentation.grpc")
    instrumentation.server_interceptor = SpanInterceptor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.grpc", instrumentation)
    providers: list[str] = []  # the process-wide tracer provider is left alone here (see test_observability_tracing)
    monkeypatch.setattr(tracing, "configure_tracer_provider", lambda: providers.append("configured"))

    first, second = server_interceptors(ServerMetrics(), tracing=True)
    assert isinstance(first, SpanInterceptor)
    assert isinstance(second, RequestContextInterceptor)
    assert providers == ["configured"]


def test_an_ipv6_callers_address_is_logged_as_people_write_it(caplog: pytest.LogCaptureFixture) -> None:
    """`ipv6:[::1]:PORT`, not gRPC's percent-encoded `ipv6:%5B::1%5D:PORT`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=server_interceptors(ServerMetrics()))
    server.add_generic_rpc_handlers((_handlers(Recorded()),))
    port = server.add_insecure_port("[::1]:0")
    server.start()
    try:
        with caplog.at_level("INFO", logger="videodag_service.observability.interceptors"), \
                grpc.insecure_channel(f"[::1]:{port}") as channel:
            channel.unary_unary(f"/{SERVICE}/Unary")(b"hi")
    finally:
        server.stop(0).wait()
    peers = [record.peer for record in caplog.records if getattr(record, "grpc_method", None) == f"/{SERVICE}/Unary"]
    assert len(peers) == 1 and re.fullmatch(r"ipv6:\[::1\]:\d+", peers[0]), peers
