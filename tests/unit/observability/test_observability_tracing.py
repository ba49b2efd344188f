"""`--tracing otel`: the tracer provider set up from OTEL_* unless the host has one, and the
spans a real server sends. The provider is process-wide and can be set only once, so
whatever sets it runs in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from videodag_client import FrameResult, NotFound, RunOptions, VideodagClient
from videodag_service.observability import tracing
from videodag_service.observability.tracing import TracingUnavailable

_PROVIDER_REPORT = textwrap.dedent("""
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    if sys.argv[1] == "host":
        trace.set_tracer_provider(TracerProvider())
    from videodag_service.observability import tracing
    before = trace.get_tracer_provider()
    tracing.configure_tracer_provider()
    provider = trace.get_tracer_provider()
    print(json.dumps({
        "kept": provider is before,
        "service_name": provider.resource.attributes.get("service.name"),
        "exporters": sorted(type(p.span_exporter).__name__
                            for p in provider._active_span_processor._span_processors),
    }))
""")


def _provider_set_up(how: str, **environment: str) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    completed = subprocess.run([sys.executable, "-c", _PROVIDER_REPORT, how], env={**env, **environment},
                               capture_output=True, text=True, timeout=60, check=True)
    report: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return report


def test_without_a_provider_the_server_sets_one_up_from_the_standard_variables() -> None:
    assert _provider_set_up("none") == {"kept": False, "service_name": "videodag",
                                        "exporters": ["OTLPSpanExporter"]}
    assert _provider_set_up("none", OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="videodag-eu") == {
        "kept": False, "service_name": "videodag-eu", "exporters": ["ConsoleSpanExporter"]}
    assert _provider_set_up("none", OTEL_TRACES_EXPORTER="none")["exporters"] == []
    assert _provider_set_up("none", OTEL_TRACES_EXPORTER="otlp, console")["exporters"] == [
        "ConsoleSpanExporter", "OTLPSpanExporter"]


def test_a_provider_the_host_set_up_is_kept() -> None:
    assert _provider_set_up("host")["kept"] is True


def test_an_unknown_exporter_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(TracingUnavailable, match=r"OTEL_TRACES_EXPORTER names 'zipkin'; .* otlp, console, none"):
        tracing.configure_tracer_provider()


def test_the_otlp_exporter_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(TracingUnavailable, match=r"OTLP exporter is not installed: install the tracing extra"):
        tracing._exporter("otlp")


def _spans(stdout: str) -> list[dict[str, Any]]:
    """The console exporter's spans: indented JSON objects, one after another."""
    decoder = json.JSONDecoder()
    spans = []
    position = stdout.find("{")
    while position >= 0:
        span, end = decoder.raw_decode(stdout, position)
        spans.append(span)
        position = stdout.find("{", end)
    return spans


def test_a_traced_server_sends_a_span_per_call_with_its_status(tmp_path: Path, sample_clip: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    server = subprocess.Popen(
        [sys.executable, "-m", "videodag_service.server", "--port", "0", "--tracing", "otel", "--log-level", "WARNING",
         "--temp-dir", str(tmp_path / "tmp"), "--data-dir", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        listening = server.stdout.readline()
        assert "listening on" in listening, server.stderr.read() if server.stderr else ""
        port = int(listening.rsplit(":", 1)[1])
        with VideodagClient(f"127.0.0.1:{port}") as client:
            client.list_pipelines()
            events = list(client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(max_frames=2)))
            assert sum(isinstance(event, FrameResult) for event in events) == 2
            with pytest.raises(NotFound):
                list(client.upload_and_run(sample_clip, "no_such_pipeline"))
    finally:
        server.send_signal(signal.SIGTERM)  # a clean exit flushes the spans still batched
        stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    calls = [(span["name"], span["kind"], span["attributes"].get("rpc.grpc.status_code"),
              span["resource"]["attributes"].get("service.name")) for span in _spans(stdout)]
    service = "/videodag.v1.VideoPipelineService"
    assert calls == [
        (f"{service}/ListPipelines", "SpanKind.SERVER", 0, "videodag"),
        (f"{service}/UploadAndRun", "SpanKind.SERVER", 0, "videodag"),
        (f"{service}/UploadAndRun", "SpanKind.SERVER", 5, "videodag"),  # NOT_FOUND
    ]
