"""What operators see of a running server: Prometheus metrics, JSON logs with request ids,
call interceptors (OpenTelemetry tracing on demand) and the health probe of the container.
"""

from videodag_service.observability.interceptors import RequestContextInterceptor, server_interceptors
from videodag_service.observability.logging import (
    REQUEST_ID_METADATA_KEY,
    JsonFormatter,
    RequestIdFilter,
    configure_logging,
    current_request_id,
    new_request_id,
    request_id_bound,
    request_id_from_metadata,
)
from videodag_service.observability.metrics import (
    UNKNOWN_PIPELINE,
    MetricsExporter,
    ServerMetrics,
    start_metrics_exporter,
)
from videodag_service.observability.tracing import TracingUnavailable, tracing_interceptors

__all__ = [
    "REQUEST_ID_METADATA_KEY",
    "UNKNOWN_PIPELINE",
    "JsonFormatter",
    "MetricsExporter",
    "RequestContextInterceptor",
    "RequestIdFilter",
    "ServerMetrics",
    "TracingUnavailable",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_id_bound",
    "request_id_from_metadata",
    "server_interceptors",
    "start_metrics_exporter",
    "tracing_interceptors",
]
