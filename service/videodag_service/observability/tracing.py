"""OpenTelemetry tracing, on demand (`--tracing otel`): a span per call, sent where OTEL_* says.

The spans come from OpenTelemetry's own gRPC server interceptor. Spans need a tracer
provider to go anywhere, and without one OpenTelemetry drops them silently, so a server
asked to trace sets one up unless its host already did (code that embeds the server, or a
provider configured before it starts). It follows OpenTelemetry's standard variables, as
any instrumented service does: `OTEL_TRACES_EXPORTER` (`otlp`, the default, over gRPC to
`OTEL_EXPORTER_OTLP_ENDPOINT`, by default localhost:4317; `console`, one JSON span per
line on stdout; `none`), `OTEL_SERVICE_NAME` (default "videodag"),
`OTEL_RESOURCE_ATTRIBUTES` and the batch processor's `OTEL_BSP_*`.

The packages are an optional install (the `tracing` extra); a server asked to trace without
them refuses to start, saying what to install.
"""

from __future__ import annotations

import os
from typing import Any

import grpc

INSTALL_HINT = "install the tracing extra (pip install 'videodag[tracing]'; in a checkout: pip install -e '.[tracing]')"
DEFAULT_SERVICE_NAME = "videodag"
_EXPORTERS = ("otlp", "console", "none")


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
    return [server_interceptor()]  # type: ignore[no-untyped-call]  # OpenTelemetry ships it unannotated


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
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # the host's own provider, exporters and all
    try:
        exporters = [_exporter(name) for name in _exporter_names()]
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
        provider = TracerProvider(resource=Resource.create(attributes))
        for exporter in exporters:
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter))
    except ValueError as error:  # OpenTelemetry's word for an OTEL_* variable it cannot read
        raise TracingUnavailable(f"tracing cannot be set up from the OTEL_* variables: {error}") from error
    trace.set_tracer_provider(provider)


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
