"""What operators see of a running server: Prometheus metrics, JSON logs with request ids,
call interceptors (OpenTelemetry tracing on demand) and the health probe of the container.

Only the parts the engine uses too (logs, metrics) are re-exported here: the video and job
code logs through this package, and must not load gRPC by doing so. The gRPC parts are
imported from their modules: `interceptors`, `tracing`, `call_deadline`, `healthcheck`.
"""

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

__all__ = [
    "REQUEST_ID_METADATA_KEY",
    "UNKNOWN_PIPELINE",
    "JsonFormatter",
    "MetricsExporter",
    "RequestIdFilter",
    "ServerMetrics",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_id_bound",
    "request_id_from_metadata",
    "start_metrics_exporter",
]
