"""OpenTelemetry tracing, on demand (`--tracing otel`): a span per call, sent where OTEL_* says.

The spans come from OpenTelemetry's own gRPC server interceptor. Spans need a tracer
provider to go anywhere, and without one OpenTelemetry drops them silently, so a server
asked to trace sets one up unless its host already did (code that embeds the server, or a
provider configured before it starts). It follows OpenTelemetry's standard variables, as
any instrumented service does: `OTEL_TRACES_EXPORTER` (`otlp`, the default, over gRPC to
`OTEL_EXPORTER_OTLP_ENDPOINT`, by default localhost:4317; `console`, each span an indented
JSON object on stdout; `none`), `OTEL_SERVICE_NAME` or a `service.name` in
`OTEL_RESOURCE_ATTRIBUTES` (default "videodag"), the batch processor's `OTEL_BSP_*`, and
`OTEL_PYTHON_GRPC_EXCLUDED_SERVICES` (services whose calls get no span, such as
`grpc.health.v1.Health`).

A refusal or failure is a span with its status code, never an exception event nor a status
description: the interceptor's tracer would record the abort's traceback, which chains the
error's message (the start of a text upload, a file name, an idempotency key) and the server's
paths, and its servicer context puts the message in the status, for a backend read by more
people than the log is. The code is the one the log and metrics give (`end_call_span`, from the
request-context interceptor): the interceptor misses a response stream's cancel.

The spans still batched when the server stops get a few seconds to go out: OpenTelemetry's
own exit waits up to 30 s for a collector that does not answer.

The packages are an optional install (the `tracing` extra); a server asked to trace without
them refuses to start, saying what to install.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

INSTALL_HINT = "install the tracing extra (pip install 'videodag[tracing]'; in a checkout: pip install -e '.[tracing]')"
DEFAULT_SERVICE_NAME = "videodag"
_EXPORTERS = ("otlp", "console", "none")
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"  # the semantic conventions' attribute, as the interceptor sets it
# The codes OpenTelemetry's gRPC instrumentation counts as a server's errors (`_server_status`), after
# the semantic conventions for a server's span; the rest (a cancel, a refusal) are the caller's doing.
SERVER_ERROR_CODES = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})
logger = logging.getLogger(__name__)

_SPANS_FLUSH_SECONDS = 3.0
# The provider this module set up (None when the host brought its own), its span processors
# while servers use them, and how many servers of this process do: the last to stop ends them,
# and a server started after that gets new ones (a process's provider is set once).
_provider: Any = None
_processors: list[Any] = []
_servers_tracing = 0
_lock = threading.Lock()


class TracingUnavailable(RuntimeError):
    """Raised when tracing is asked for but cannot work: a package missing, an exporter unknown."""


def tracing_interceptors(enabled: bool) -> list[grpc.ServerInterceptor]:
    """OpenTelemetry's server interceptor, with a tracer provider behind it, when enabled; else nothing."""
    if not enabled:
        return []
    try:
        from opentelemetry.instrumentation.grpc import server_interceptor
    except ImportError as error:
        raise TracingUnavailable(
            f"tracing is enabled but OpenTelemetry's gRPC instrumentation is not installed: {INSTALL_HINT}, "
            "or turn tracing off"
        ) from error
    configure_tracer_provider()
    from opentelemetry import trace

    interceptor = server_interceptor(  # type: ignore[no-untyped-call]  # OpenTelemetry ships it unannotated
        tracer_provider=_refusal_messages_untraced(trace.get_tracer_provider()), filter_=_excluded_services_filter()
    )
    return [interceptor]


def end_tracing() -> None:
    """Send the spans still batched, for a few seconds at most, and stop the processors this
    module set up; a host's own provider is the host's to end. The SDK's shutdown takes no time
    limit of its own (it retries a collector that does not answer for up to 30 s): it runs in a
    thread the process does not wait for."""
    global _servers_tracing
    with _lock:
        _servers_tracing = max(0, _servers_tracing - 1)
        if _servers_tracing:
            return  # another server of this process still sends spans through them
        processors = list(_processors)
        _processors.clear()
    if not processors:
        return

    def shut_down() -> None:
        for processor in processors:
            processor.shutdown()

    ender = threading.Thread(target=shut_down, name="tracing-end", daemon=True)
    try:
        ender.start()
    except RuntimeError as error:  # no thread to be had (a pids limit): the spans batched are lost
        logger.warning("the spans still batched are not sent: %s", error)
        return
    ender.join(_SPANS_FLUSH_SECONDS)
    if ender.is_alive():
        logger.warning("the spans still batched could not all be sent within %g s (is the collector up?)",
                       _SPANS_FLUSH_SECONDS)


def _excluded_services_filter() -> Callable[[Any], bool] | None:
    """OpenTelemetry's gRPC instrumentation honours OTEL_PYTHON_GRPC_EXCLUDED_SERVICES; its bare
    interceptor does not, so the filter is made here."""
    names = [name.strip() for name in os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")]
    services = [name for name in names if name]
    if not services:
        return None
    from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_name

    return negate(any_of(*(service_name(name) for name in services)))


def call_span() -> Any:
    """The span current as a call's handler starts: the interceptor's span for the call (a span
    that records nothing when its service is excluded). Taken then, not when the call ends: a
    response stream's end can come in another thread (its generator closed by the garbage
    collector), where some other span, or none, is current."""
    from opentelemetry import trace

    return trace.get_current_span()


def end_call_span(span: Any, code: grpc.StatusCode) -> None:
    """Give the call's span the code the call ended with, the one its log line and metrics give.

    The interceptor never sees a response stream closed under it (a client's cancel, gRPC's
    GeneratorExit): such a span kept the OK it was started with. ERROR, with no message, for
    the codes the instrumentation counts as a server's errors; the others stay unset."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if code in SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR))


def _refusal_messages_untraced(provider: Any) -> Any:
    """`provider`, its tracers' spans kept free of a call's error message, which may quote the
    caller's upload or name its file.

    Spans are opened without recording the exception that ends them: a call's refusal (gRPC's
    bare abort Exception, chaining the error) becomes its status code alone. The interceptor
    still records an exception that escaped the servicer, explicitly. And a span's status keeps
    its code only: the interceptor's servicer context sets it from `abort` and `set_details` with
    the message as its description ("StatusCode.UNAVAILABLE:the decoder of 'x.mp4' was ...");
    whatever sets it, through these spans, the description is dropped."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    class CodeOnlySpan(trace.Span):
        """A span whose status is set without a description; all else is the span's own."""

        def __init__(self, span: trace.Span) -> None:
            self._span = span

        def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
            self._span.set_status(Status(status.status_code if isinstance(status, Status) else status))

        def end(self, *args: Any, **kwargs: Any) -> None:
            self._span.end(*args, **kwargs)

        def get_span_context(self) -> trace.SpanContext:
            return self._span.get_span_context()

        def set_attributes(self, *args: Any, **kwargs: Any) -> None:
            self._span.set_attributes(*args, **kwargs)

        def set_attribute(self, *args: Any, **kwargs: Any) -> None:
            self._span.set_attribute(*args, **kwargs)

        def add_event(self, *args: Any, **kwargs: Any) -> None:
            self._span.add_event(*args, **kwargs)

        def add_link(self, *args: Any, **kwargs: Any) -> None:
            self._span.add_link(*args, **kwargs)

        def update_name(self, name: str) -> None:
            self._span.update_name(name)

        def is_recording(self) -> bool:
            return self._span.is_recording()

        def record_exception(self, *args: Any, **kwargs: Any) -> None:
            self._span.record_exception(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:  # what a span of the SDK has beyond the API's
            return getattr(self._span, name)

    class Tracer(trace.Tracer):
        def __init__(self, tracer: trace.Tracer) -> None:
            self._tracer = tracer

        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            return CodeOnlySpan(self._tracer.start_span(*args, **kwargs))

        @contextmanager
        def start_as_current_span(  # type: ignore[override]
            self, *args: Any, **kwargs: Any
        ) -> Iterator[trace.Span]:
            # An exception ending the span sets no status with its message either (the SDK's default would).
            unrecorded = {**kwargs, "record_exception": False, "set_status_on_exception": False}
            with self._tracer.start_as_current_span(*args, **unrecorded) as span:
                yield CodeOnlySpan(span)

    class TracerProvider(trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return Tracer(provider.get_tracer(*args, **kwargs))

    return TracerProvider()


def configure_tracer_provider() -> None:
    """Set up the SDK's tracer provider from the OTEL_* variables, unless one is set up already."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        message = f"tracing is enabled but OpenTelemetry's SDK is not installed: {INSTALL_HINT}"
        raise TracingUnavailable(message) from error
    global _provider, _servers_tracing
    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider) and current is not _provider:
            return  # the host's own provider, exporters and all
        try:
            exporters = [_exporter(name) for name in _exporter_names()] if not _processors else []
            provider = current if current is _provider else None
            if provider is None:
                resource = Resource.create({})  # OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, name the service
                if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
                    resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
                # Ended by `end_tracing`, with a bound: the SDK's own end at exit waits up to 30 s.
                provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            for exporter in exporters:
                if exporter is not None:
                    processor = BatchSpanProcessor(exporter)
                    provider.add_span_processor(processor)
                    _processors.append(processor)
        except ValueError as error:  # OpenTelemetry's word for an OTEL_* variable it cannot read
            raise TracingUnavailable(f"tracing cannot be set up from the OTEL_* variables: {error}") from error
        if _provider is None:
            trace.set_tracer_provider(provider)
            _provider = provider
        _servers_tracing += 1


def _exporter_names() -> list[str]:
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    unknown = [name for name in names if name not in _EXPORTERS]
    if unknown:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER names {', '.join(repr(name) for name in unknown)}; "
            f"this server sends spans with {', '.join(_EXPORTERS)}"
        )
    return names


def _exporter(name: str) -> Any:
    """The span exporter `name` stands for; None for "none"."""
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as error:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER is otlp (the default) but OpenTelemetry's OTLP exporter is not installed: "
            f"{INSTALL_HINT}, or set OTEL_TRACES_EXPORTER=console"
        ) from error
    return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*
