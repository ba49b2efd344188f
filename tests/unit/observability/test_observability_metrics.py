"""ServerMetrics on its own registry, and the HTTP exporter scraped over loopback."""

from __future__ import annotations

import logging
import math
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from videodag_service.errors import JobStoreUnavailable
from videodag_service.observability import ServerMetrics, start_metrics_exporter


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_runs_frames_and_uploads_are_counted_by_pipeline_and_status() -> None:
    metrics = ServerMetrics()
    metrics.record_run("frame_stats_v1")
    metrics.record_run("frame_stats_v1")
    metrics.record_run("player_tracking_v1", "INTERNAL")
    metrics.record_frame("frame_stats_v1", 120)
    metrics.record_frame("frame_stats_v1")
    metrics.record_upload("frame_stats_v1", 845_040)

    assert sample(metrics, "videodag_runs_total", pipeline="frame_stats_v1", status="OK") == 2
    assert sample(metrics, "videodag_runs_total", pipeline="player_tracking_v1", status="INTERNAL") == 1
    assert sample(metrics, "videodag_runs_total", pipeline="player_tracking_v1", status="OK") == 0
    assert sample(metrics, "videodag_frames_processed_total", pipeline="frame_stats_v1") == 121
    assert sample(metrics, "videodag_upload_bytes_total", pipeline="frame_stats_v1") == 845_040


def test_node_latency_histogram_buckets_each_call() -> None:
    metrics = ServerMetrics()
    for seconds in (0.002, 0.004, 0.2):
        metrics.record_node_call("p", "detect", "ssdlite.detect_people", seconds)
    labels = {"pipeline": "p", "node": "detect", "plugin": "ssdlite.detect_people"}

    assert sample(metrics, "videodag_node_latency_seconds_count", **labels) == 3
    assert sample(metrics, "videodag_node_latency_seconds_sum", **labels) == pytest.approx(0.206)
    assert sample(metrics, "videodag_node_latency_seconds_bucket", le="0.0025", **labels) == 1
    assert sample(metrics, "videodag_node_latency_seconds_bucket", le="0.005", **labels) == 2
    assert sample(metrics, "videodag_node_latency_seconds_bucket", le="0.1", **labels) == 2
    assert sample(metrics, "videodag_node_latency_seconds_bucket", le="+Inf", **labels) == 3


def test_active_streams_gauge_follows_the_with_block_even_on_error() -> None:
    metrics = ServerMetrics()
    method = "/videodag.v1.VideoPipelineService/UploadAndRun"
    with metrics.stream_active(method), metrics.stream_active(method):
        assert sample(metrics, "videodag_active_streams", method=method) == 2
    with pytest.raises(RuntimeError), metrics.stream_active(method):
        raise RuntimeError("stream failed")
    assert sample(metrics, "videodag_active_streams", method=method) == 0


def test_queue_depth_is_a_gauge_per_queue() -> None:
    metrics = ServerMetrics()
    waiting = [7]
    metrics.watch_queue_depth("jobs", lambda: waiting[0])
    metrics.watch_queue_depth("other", lambda: 1)
    assert sample(metrics, "videodag_queue_depth", queue="jobs") == 7
    waiting[0] = 3
    assert sample(metrics, "videodag_queue_depth", queue="jobs") == 3
    assert sample(metrics, "videodag_queue_depth", queue="other") == 1


def test_a_queue_depth_that_cannot_be_read_leaves_the_other_metrics_served() -> None:
    """The job store out of reach (a Redis outage) failed the whole scrape with HTTP 500."""
    metrics = ServerMetrics()
    metrics.record_run("p")

    def unreachable() -> int:
        raise JobStoreUnavailable("the job store cannot be reached (ConnectionError: Error 111 connecting to "
                                  "redis:6379. Connection refused.); retry shortly")

    metrics.watch_queue_depth("jobs", unreachable)
    assert math.isnan(sample(metrics, "videodag_queue_depth", queue="jobs"))
    assert sample(metrics, "videodag_runs_total", pipeline="p", status="OK") == 1
    assert b"videodag_runs_total" in generate_latest(metrics.registry)


def test_a_queue_depth_failing_for_another_reason_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug must not leave the gauge at NaN without a word; said once, not at every scrape."""
    metrics = ServerMetrics()

    def broken() -> int:
        raise KeyError("a bug")

    metrics.watch_queue_depth("jobs", broken)
    with caplog.at_level(logging.DEBUG, logger="videodag_service.observability.metrics"):
        for _ in range(3):
            assert math.isnan(sample(metrics, "videodag_queue_depth", queue="jobs"))
    (logged,) = caplog.records
    assert logged.levelno == logging.ERROR and logged.exc_info is not None
    assert "queue jobs: depth not read" in logged.getMessage()


def test_two_servers_in_one_process_keep_separate_series() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.record_run("p")
    assert sample(first, "videodag_runs_total", pipeline="p", status="OK") == 1
    assert sample(second, "videodag_runs_total", pipeline="p", status="OK") == 0


def test_exporter_serves_the_text_format_over_http() -> None:
    metrics = ServerMetrics()
    metrics.record_run("frame_stats_v1")
    metrics.record_call("/videodag.v1.VideoPipelineService/ListPipelines", "OK", 0.003)
    exporter = start_metrics_exporter(metrics, port=0, host="127.0.0.1")
    try:
        assert exporter.port > 0
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        exporter.stop()

    families = {family.name: family for family in text_string_to_metric_families(body)}
    runs = [s for s in families["videodag_runs"].samples if s.name == "videodag_runs_total"]
    assert [(s.labels, s.value) for s in runs] == [({"pipeline": "frame_stats_v1", "status": "OK"}, 1.0)]
    assert {"videodag_grpc_calls", "videodag_grpc_call_duration_seconds", "videodag_node_latency_seconds",
            "videodag_upload_bytes", "videodag_active_streams", "videodag_queue_depth",
            "videodag_frames_processed"} <= set(families)
    with pytest.raises(OSError):
        urllib.request.urlopen(exporter.url, timeout=2)


def test_the_readme_names_every_metric_and_only_metrics_that_exist() -> None:
    """The README's list is what an SRE writes alerts from."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("- **Metrics**"):readme.index("- **Logs**")]
    documented = set(re.findall(r"`(videodag_[a-z_]+)[{`]", section))
    exported = set()
    for family in ServerMetrics().registry.collect():
        exported.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert documented == exported


def test_an_exporter_on_every_address_answers_over_ipv6_too() -> None:
    """As gRPC takes 0.0.0.0 for the server's port: a scrape of a pod's IPv6 address reaches it."""
    exporter = start_metrics_exporter(ServerMetrics(), port=0, host="0.0.0.0")
    try:
        for host in ("127.0.0.1", "[::1]"):
            with urllib.request.urlopen(f"http://{host}:{exporter.port}/metrics", timeout=5) as response:
                assert response.status == 200
    finally:
        exporter.stop()
