"""`--tracing otel`: the tracer provider set up from OTEL_* unless the host has one, and the
spans a real server sends. The provider is process-wide and can be set only once, so
whatever sets it runs in a process of its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from videodag.v1 import run_pb2
from videodag.v1 import video_pipeline_service_pb2 as service_pb2
from videodag.v1 import video_pipeline_service_pb2_grpc as service_pb2_grpc
from videodag_client import FrameResult, InvalidArgument, NotFound, RunOptions, VideodagClient
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


def test_a_service_name_in_the_resource_attributes_names_the_service() -> None:
    """It was overridden by the default: every deployment named that way showed as "videodag"."""
    named = _provider_set_up("none", OTEL_RESOURCE_ATTRIBUTES="service.name=vd-eu,deployment.environment=prod")
    assert named["service_name"] == "vd-eu"
    assert _provider_set_up("none", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod")["service_name"] == (
        "videodag")


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


def _stopped(server: subprocess.Popen[str]) -> str:
    """What the traced server printed (its console spans) once stopped cleanly: a clean exit
    flushes the spans still batched."""
    server.send_signal(signal.SIGTERM)
    stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    return stdout


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


def _traced_server(tmp_path: Path, **otel: str) -> tuple[subprocess.Popen[str], int]:
    """`videodag-server --tracing otel` with the OTEL_* variables `otel` alone; it and its port."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "videodag_service.server", "--port", "0", "--tracing", "otel", "--log-level", "WARNING",
         "--temp-dir", str(tmp_path / "tmp"), "--data-dir", str(tmp_path / "data")],
        env={**env, **otel}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    listening = server.stdout.readline()
    if "listening on" not in listening:
        server.kill()
        raise AssertionError(server.communicate()[1])
    return server, int(listening.rsplit(":", 1)[1])


def test_a_traced_server_sends_a_span_per_call_with_its_status(tmp_path: Path, sample_clip: Path) -> None:
    server, port = _traced_server(
        tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_PYTHON_GRPC_EXCLUDED_SERVICES="grpc.health.v1.Health, grpc.reflection.v1.ServerReflection")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # a service excluded: no span
            checked = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
        with VideodagClient(f"127.0.0.1:{port}") as client:
            client.list_pipelines()
            events = list(client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(max_frames=2)))
            assert sum(isinstance(event, FrameResult) for event in events) == 2
            with pytest.raises(NotFound):
                list(client.upload_and_run(sample_clip, "no_such_pipeline"))
            text = tmp_path / "private memo.mp4"
            text.write_text("Dear Bob, the quarterly numbers are confidential\n")
            with pytest.raises(InvalidArgument):
                list(client.upload_and_run(text, "frame_stats_v1"))
    finally:
        stdout = _stopped(server)
    spans = _spans(stdout)
    calls = [(span["name"], span["kind"], span["attributes"].get("rpc.grpc.status_code"),
              span["resource"]["attributes"].get("service.name")) for span in spans]
    service = "/videodag.v1.VideoPipelineService"
    assert calls == [
        (f"{service}/ListPipelines", "SpanKind.SERVER", 0, "videodag"),
        (f"{service}/UploadAndRun", "SpanKind.SERVER", 0, "videodag"),
        (f"{service}/UploadAndRun", "SpanKind.SERVER", 5, "videodag"),  # NOT_FOUND
        (f"{service}/UploadAndRun", "SpanKind.SERVER", 3, "videodag"),  # INVALID_ARGUMENT
    ]
    # A refusal is its status code: no exception event, whose traceback chained the error's message
    # (the upload's text, its file name) and the server's paths.
    assert [span["events"] for span in spans] == [[], [], [], []]
    assert "quarterly" not in stdout and "memo" not in stdout


def _run_request(payload: bytes, file_name: str) -> Iterator[run_pb2.UploadAndRunRequest]:
    """An UploadAndRun request stream: `frame_stats_v1` on `payload`, sent as `file_name`."""
    yield service_pb2.UploadAndRunRequest(config=run_pb2.RunConfig(pipeline_id="frame_stats_v1", file_name=file_name))
    for start in range(0, len(payload), 1 << 20):
        yield service_pb2.UploadAndRunRequest(chunk=payload[start:start + (1 << 20)])


def _processes_reading(folder: Path, but: int) -> list[int]:
    """The processes (but this one and `but`) with a file of `folder` open: a run's decoder."""
    found = []
    for descriptors in Path("/proc").glob("[0-9]*/fd"):
        pid = int(descriptors.parent.name)
        if pid in (os.getpid(), but):
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd).startswith(f"{folder}/") for fd in descriptors.iterdir()):
                found.append(pid)
    return found


def _upload_and_run_spans(stdout: str) -> list[dict[str, Any]]:
    return [span for span in _spans(stdout) if span["name"] == "/videodag.v1.VideoPipelineService/UploadAndRun"]


def test_a_run_its_client_cancelled_has_a_cancelled_span(tmp_path: Path, thousand_frame_video: Path) -> None:
    """OpenTelemetry's interceptor never sees a response stream closed by a client's cancel: the
    span kept the OK it started with (code 0) while the log and metrics said CANCELLED."""
    server, port = _traced_server(tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        # A small receive window the client does not read: the server's stream waits at a response, where a
        # cancel closes it (GeneratorExit), rather than in the run, which would notice the cancel and abort.
        unread = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=unread) as channel:
            call = service_pb2_grpc.VideoPipelineServiceStub(channel).UploadAndRun(
                _run_request(thousand_frame_video.read_bytes(), "clip.avi"), timeout=60)
            with pytest.raises(grpc.RpcError) as ended:
                for event in call:
                    if event.HasField("frame"):
                        time.sleep(1)  # the window fills
                        call.cancel()  # most of the 1000 frames still to come
            assert ended.value.code() is grpc.StatusCode.CANCELLED
    finally:
        stdout = _stopped(server)
    [span] = _upload_and_run_spans(stdout)
    assert span["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert span["status"] == {"status_code": "UNSET"}  # a cancel is the caller's doing, as the instrumentation has it


def test_a_failure_naming_the_callers_file_keeps_the_name_out_of_its_span(
    tmp_path: Path, thousand_frame_video: Path
) -> None:
    """The interceptor's servicer context set the span's status from `abort` with the message as
    its description: "StatusCode.UNAVAILABLE:the decoder of 'patient-4711-secret.avi' was killed"."""
    server, port = _traced_server(tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = service_pb2_grpc.VideoPipelineServiceStub(channel).UploadAndRun(
                _run_request(thousand_frame_video.read_bytes(), "patient-4711-secret.avi"), timeout=60)
            with pytest.raises(grpc.RpcError) as failed:
                for event in call:
                    if event.HasField("frame") and event.frame.frame_index == 0:
                        [decoder] = _processes_reading(tmp_path / "tmp", but=server.pid)  # the server stores it
                        os.kill(decoder, signal.SIGKILL)  # as the out-of-memory killer does
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "patient-4711-secret" in failed.value.details()  # the caller hears it; the trace does not
    finally:
        stdout = _stopped(server)
    [span] = _upload_and_run_spans(stdout)
    assert span["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span["status"] == {"status_code": "ERROR"}
    assert span["events"] == []
    assert "patient-4711" not in stdout


_RESTARTED_SERVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from videodag_client import VideodagClient
    from videodag_service.server import start_server
    from videodag_service.settings import Settings
    folder = Path(sys.argv[1])
    for start in (1, 2):
        running = start_server(Settings(port=0, temp_dir=folder / "tmp", data_dir=folder / "data", tracing="otel"))
        with VideodagClient(f"127.0.0.1:{running.port}") as client:
            client.list_pipelines()
        running.stop(grace_seconds=0)
""")


def test_a_server_started_again_in_the_same_process_still_sends_its_spans(tmp_path: Path) -> None:
    """The first stop ended the provider's processors, and the second start took the provider,
    set up by the first, for its host's: no span of the second server went anywhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    completed = subprocess.run([sys.executable, "-c", _RESTARTED_SERVER, str(tmp_path)], env=env,
                               capture_output=True, text=True, timeout=120, check=True)
    assert [span["name"] for span in _spans(completed.stdout)] == [
        "/videodag.v1.VideoPipelineService/ListPipelines"] * 2


def test_a_collector_that_does_not_answer_holds_the_exit_a_few_seconds_only(tmp_path: Path) -> None:
    """OpenTelemetry's own end at exit retried the batched spans for the exporter's whole time
    limit (10 s by default, per batch): a stop past Docker's 10 s and into its SIGKILL."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    server, port = _traced_server(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}",
                                  OTEL_EXPORTER_OTLP_TIMEOUT="20",
                                  OTEL_BSP_SCHEDULE_DELAY="60000")  # every span still batched at the stop
    try:
        with VideodagClient(f"127.0.0.1:{port}") as client:
            for _ in range(20):
                client.list_pipelines()
    finally:
        server.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        _, stderr = server.communicate(timeout=120)
    assert server.returncode == 0, stderr
    assert time.monotonic() - stopped_at < 10, "the exporter's 20 s are not waited out"
    assert "the spans still batched could not all be sent within 3 s (is the collector up?)" in stderr


@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK])
def test_no_code_puts_the_calls_message_in_its_span(code: grpc.StatusCode) -> None:
    """The span status's description was the message for the codes counted as errors, set in
    `abort` and again in `set_code`/`set_details`, however a handler ends its call. A tracer
    provider of this test's own (the process's is set once), with spans kept in memory."""
    from opentelemetry.instrumentation.grpc import server_interceptor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from videodag_service.observability.interceptors import RequestContextInterceptor

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    message = "the decoder of 'patient-4711-secret.mp4' failed"

    def aborting(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(code, message)
        raise AssertionError("abort raises")

    def setting(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(code)
        context.set_details(message)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[
        server_interceptor(tracer_provider=tracing._refusal_messages_untraced(provider)),  # type: ignore[no-untyped-call]
        RequestContextInterceptor(tracing=True),
    ])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Ends", {
        "Aborting": grpc.unary_unary_rpc_method_handler(aborting),
        "Setting": grpc.unary_unary_rpc_method_handler(setting),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method in ("Aborting", "Setting"):
                with pytest.raises(grpc.RpcError) as ended:
                    channel.unary_unary(f"/test.Ends/{method}")(b"", timeout=10)
                assert (ended.value.code(), ended.value.details()) == (code, message)
    finally:
        server.stop(0).wait()
    spans = exported.get_finished_spans()
    assert len(spans) == 2
    error = code in tracing.SERVER_ERROR_CODES
    for span in spans:
        assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == code.value[0]
        assert (span.status.status_code.name, span.status.description) == ("ERROR" if error else "UNSET", None)
        assert list(span.events) == []


def test_the_tracers_spans_keep_their_links_and_no_exception_message_in_their_status() -> None:
    """The span wrapper passes on all else: a link added was lost (with a warning), and a span
    ended by an exception took its message as the status's description (the SDK's default)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = tracing._refusal_messages_untraced(provider).get_tracer("test")
    linked = tracer.start_span("linked")
    linked.end()
    span = tracer.start_span("linking")
    span.add_link(linked.get_span_context())
    span.end()
    with pytest.raises(ValueError), tracer.start_as_current_span("failing"):
        raise ValueError("the caller's file 'patient-4711.mp4'")
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert [link.context for link in spans["linking"].links] == [linked.get_span_context()]
    assert spans["failing"].status.description is None and spans["failing"].events == ()
