"""Server interceptors: a request id, metrics and a log line for every call; tracing on demand.

`RequestContextInterceptor` makes the caller's `x-request-id` (or a new id) current while the
handler runs, sends it back so the caller can quote it, counts the call by method and status
code, counts open streams, and logs one line when the call ends.

The id goes back in the trailers of every call, and in the headers that go with its first
response message: never in headers sent ahead of it. A call refused before any response is then
"trailers-only", the one form of failure gRPC's `retryPolicy` and transparent retries may retry
(gRFC A6 takes headers as the call committed): with the id sent at the call's start, no client's
retry policy ever retried a refusal of this server's.

Tracing, OpenTelemetry's own gRPC interceptor, is added outermost when asked for (`tracing`).
Each call's span then ends with the code this interceptor works out, the one the log and metrics
give: OpenTelemetry's interceptor never sees a response stream closed by a client's cancel.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from videodag_service.method_handlers import rebuilt_handler
from videodag_service.observability.call_deadline import ended_by_its_deadline
from videodag_service.observability.logging import REQUEST_ID_METADATA_KEY, request_id_bound, request_id_from_metadata
from videodag_service.observability.metrics import STATUS_OK, ServerMetrics
from videodag_service.observability.tracing import call_span, end_call_span, tracing_interceptors

logger = logging.getLogger(__name__)

# Probes and tooling: logged at DEBUG so a health check every few seconds does not flood the log.
_QUIET_SERVICE_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Behavior = Callable[[Any, grpc.ServicerContext], Any]


class RequestContextInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Request id, call metrics and an access log line around every handler; with `tracing`,
    the call's final code on its span."""

    def __init__(self, metrics: ServerMetrics | None = None, *, tracing: bool = False) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        # Runs on gRPC's polling thread: only read the metadata here, bind the id in the handler's thread.
        request_id = request_id_from_metadata(handler_call_details.invocation_metadata)
        streams = handler.request_streaming or handler.response_streaming

        def wrapped(behavior: Behavior, kind: str) -> Behavior:
            if kind.endswith("_stream"):  # the response streams
                return self._wrap_streaming(behavior, method, request_id)
            return self._wrap_unary(behavior, method, request_id, streams)

        return rebuilt_handler(handler, wrap=wrapped)

    def _wrap_unary(self, behavior: Behavior, method: str, request_id: str, streams: bool) -> Behavior:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self._call(method, request_id, context, streams):
                response = behavior(request, context)
                _send_request_id(context, request_id)
                return response

        return handle

    def _wrap_streaming(self, behavior: Behavior, method: str, request_id: str) -> Behavior:
        # The handler's body runs while gRPC iterates the responses, after this wrapper has
        # returned: the scope must live inside the generator.
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._call(method, request_id, context, True):
                responses = iter(behavior(request, context))
                try:
                    for count, response in enumerate(responses):
                        if count == 0:
                            _send_request_id(context, request_id)
                        yield response
                finally:
                    if isinstance(responses, Generator):  # its own clean-up runs inside this call's scope
                        responses.close()

        return handle

    @contextmanager
    def _call(self, method: str, request_id: str, context: grpc.ServicerContext, streams: bool) -> Iterator[None]:
        started = time.perf_counter()
        code = STATUS_OK
        span = call_span() if self._tracing else None
        with request_id_bound(request_id), self._active_stream(method, streams):
            try:
                yield
                # A handler may return quietly once its call has ended (gRPC's health Watch does
                # when its client cancels): that call did not end OK.
                code = _status_name(context, default=STATUS_OK if context.is_active() else _ended_call_code(context))
            except GeneratorExit:  # gRPC closed the response stream: the client left, or the deadline passed
                code = _ended_call_code(context)
                raise
            except BaseException:
                # context.abort() raises after recording its code. A handler that raises because
                # its call ended under it (gRPC's reflection servicer, when its request stream is
                # cancelled) did not fail; anything else becomes UNKNOWN.
                code = _status_name(
                    context, default=grpc.StatusCode.UNKNOWN.name if context.is_active() else _ended_call_code(context)
                )
                raise
            finally:
                _add_trailing_request_id(context, request_id)
                seconds = time.perf_counter() - started
                if self._metrics is not None:
                    self._metrics.record_call(method, code, seconds)
                level = logging.DEBUG if method.startswith(_QUIET_SERVICE_PREFIXES) else logging.INFO
                logger.log(
                    level, "%s %s in %.1f ms", method, code, seconds * 1000,
                    extra={"grpc_method": method, "grpc_code": code, "duration_ms": round(seconds * 1000, 3),
                           "peer": _peer(context)},
                )
                if span is not None:  # before the span ends: the tracing interceptor is outside this one
                    end_call_span(span, grpc.StatusCode[code])

    @contextmanager
    def _active_stream(self, method: str, streams: bool) -> Iterator[None]:
        if self._metrics is None or not streams:
            yield
            return
        with self._metrics.stream_active(method):
            yield


def _send_request_id(context: grpc.ServicerContext, request_id: str) -> None:
    """Headers with the id, sent as the call's first response message is about to go."""
    context.send_initial_metadata(((REQUEST_ID_METADATA_KEY, request_id),))


def _add_trailing_request_id(context: grpc.ServicerContext, request_id: str) -> None:
    """The id beside whatever trailers the handler set (an error's `grpc-status-details-bin`)."""
    trailers = tuple(context.trailing_metadata() or ())
    context.set_trailing_metadata((*trailers, (REQUEST_ID_METADATA_KEY, request_id)))


def _ended_call_code(context: grpc.ServicerContext) -> str:
    """Why a call ended under its handler: its deadline passed, or the client left."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED if ended_by_its_deadline(context) else grpc.StatusCode.CANCELLED
    return str(code.name)


def _status_name(context: grpc.ServicerContext, default: str) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default


def server_interceptors(metrics: ServerMetrics | None, *, tracing: bool = False) -> list[grpc.ServerInterceptor]:
    """Interceptors for `grpc.server(interceptors=...)`, outermost first.

    The tracing span encloses everything, so the request id and metrics work is inside it;
    put authentication after these so refused calls are still counted and logged.
    """
    return [*tracing_interceptors(tracing), RequestContextInterceptor(metrics, tracing=tracing)]


def _peer(context: grpc.ServicerContext) -> str:
    """The caller's address as people write it: gRPC gives an IPv6 one percent-encoded
    (`ipv6:%5B::1%5D:53422`), as a URI's path."""
    return urllib.parse.unquote(context.peer())
