"""Prometheus metrics of a server and the HTTP endpoint that exposes them.

Every `ServerMetrics` has its own registry rather than prometheus-client's global one, so
two servers in one process (tests, a benchmark) never share or double-register series.

Label values are bounded: pipeline ids come from the server's own pipeline files (a refused
request for an unknown id is counted under `UNKNOWN_PIPELINE`), node ids and plugins from
those pipelines, method names from the contract, status codes from gRPC's fixed set.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from videodag_service.dag.time_limit import abandoned_thread_count
from videodag_service.errors import JobStoreUnavailable

logger = logging.getLogger(__name__)

# Used as the pipeline label when a run was refused before its pipeline was known to exist.
UNKNOWN_PIPELINE = "unknown"
STATUS_OK = "OK"
# One frame of a detector on 2 cores takes 5-200 ms; a cheap stats node well under 1 ms.
NODE_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Calls range from a listing (milliseconds) to a streamed run of a long video (hours).
CALL_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 4 * 3600.0)


class ServerMetrics:
    """The server's metrics; the `record_*` methods are what the servicer, the DAG and the job service call.

    `record_run`, `record_frame` and `record_upload` make it a `JobObserver`, so the jobs
    package reports to it without importing it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.runs = Counter(
            "videodag_runs",
            "Pipeline runs that ended (UploadAndRun calls and jobs run in this process), by pipeline and final "
            "gRPC status code.",
            ["pipeline", "status"], registry=self.registry,
        )
        self.frames_processed = Counter(
            "videodag_frames_processed", "Frames a pipeline produced a result for.",
            ["pipeline"], registry=self.registry,
        )
        self.node_latency = Histogram(
            "videodag_node_latency_seconds", "Time one pipeline node spent on one frame.",
            ["pipeline", "node", "plugin"], buckets=NODE_LATENCY_BUCKETS, registry=self.registry,
        )
        self.upload_bytes = Counter(
            "videodag_upload_bytes", "Bytes of video received and stored, for UploadAndRun and SubmitJob.",
            ["pipeline"], registry=self.registry,
        )
        self.active_streams = Gauge(
            "videodag_active_streams", "Streaming calls in progress, by method.",
            ["method"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "videodag_queue_depth", "Items waiting in a queue, such as jobs waiting for a worker.",
            ["queue"], registry=self.registry,
        )
        self.abandoned_node_threads = Gauge(
            "videodag_abandoned_node_threads",
            "Threads left running a node call that went over the node time limit (Python cannot stop them).",
            registry=self.registry,
        )
        self.abandoned_node_threads.set_function(lambda: float(abandoned_thread_count()))
        self.calls = Counter(
            "videodag_grpc_calls", "gRPC calls that ended, by method and status code.",
            ["method", "code"], registry=self.registry,
        )
        self.call_duration = Histogram(
            "videodag_grpc_call_duration_seconds", "Duration of gRPC calls, from the first message to the status.",
            ["method"], buckets=CALL_DURATION_BUCKETS, registry=self.registry,
        )

    def record_run(self, pipeline_id: str, status: str = STATUS_OK) -> None:
        """A run ended; `status` is the gRPC code name it ended with ("OK", "NOT_FOUND", ...)."""
        self.runs.labels(pipeline=pipeline_id, status=status).inc()

    def record_frame(self, pipeline_id: str, count: int = 1) -> None:
        self.frames_processed.labels(pipeline=pipeline_id).inc(count)

    def record_upload(self, pipeline_id: str, size_bytes: int) -> None:
        self.upload_bytes.labels(pipeline=pipeline_id).inc(size_bytes)

    def record_node_call(self, pipeline_id: str, node_id: str, plugin: str, seconds: float) -> None:
        """One node call on one frame: the exact latency distribution."""
        self.node_latency.labels(pipeline=pipeline_id, node=node_id, plugin=plugin).observe(seconds)

    def record_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method=method, code=code).inc()
        self.call_duration.labels(method=method).observe(seconds)

    @contextmanager
    def stream_active(self, method: str) -> Iterator[None]:
        """Counts a streaming call as active for the duration of the `with` block."""
        gauge = self.active_streams.labels(method=method)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def watch_queue_depth(self, queue: str, depth: Callable[[], int]) -> None:
        """Report `depth()` as the queue's depth at every scrape; NaN (no value) while it cannot
        be read. Its error would fail the whole scrape (HTTP 500, no metric at all) during a
        Redis outage, when the other metrics are wanted most.

        `depth` raises JobStoreUnavailable while its store is out of reach: expected, and said
        at DEBUG only. Any other error is a bug, logged with its traceback the first time."""
        bug_logged = threading.Event()

        def read() -> float:
            try:
                return float(depth())
            except JobStoreUnavailable as error:
                logger.debug("queue %s: depth not read for the metrics: %s", queue, error)
            except Exception:
                if not bug_logged.is_set():
                    bug_logged.set()
                    logger.exception("queue %s: depth not read for the metrics, and will show as NaN", queue)
            return math.nan

        self.queue_depth.labels(queue=queue).set_function(read)


@dataclass
class MetricsExporter:
    """The running `/metrics` HTTP endpoint; `stop()` closes its socket and joins its thread."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_exporter(metrics: ServerMetrics, port: int, host: str = "0.0.0.0") -> MetricsExporter:
    """Serve `metrics` over HTTP (any path, as Prometheus scrapes /metrics); port 0 picks a free one.

    0.0.0.0 is every address, IPv6 ones too, as gRPC takes it for the server's own port: in an
    IPv6 cluster, a scrape of the pod's address must reach the metrics as a probe reaches the
    server. Where IPv6 is off, or sockets on :: take IPv6 alone, 0.0.0.0 is IPv4 only."""
    if host == "0.0.0.0" and (dual_stack := _dual_stack_exporter(metrics, port)) is not None:
        return dual_stack
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsExporter(host=host, port=server.server_port, _server=server, _thread=thread)


def _dual_stack_exporter(metrics: ServerMetrics, port: int) -> MetricsExporter | None:
    """An exporter on :: that takes IPv4 as well, or None where that cannot be had."""
    if not socket.has_ipv6:
        return None
    try:
        server, thread = start_http_server(port, addr="::", registry=metrics.registry)
    except OSError:  # IPv6 turned off on this host
        return None
    exporter = MetricsExporter(host="::", port=server.server_port, _server=server, _thread=thread)
    if server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):  # net.ipv6.bindv6only=1
        exporter.stop()
        return None
    return exporter
