"""A real server's /metrics after real runs: what operators scrape."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hardening_support import Request, chunks, config, raw_call
from harness import ServerFactory
from jobs_harness import finished, is_running_with_frames, wait_for_job, wait_until
from prometheus_client.parser import text_string_to_metric_families

from videodag.v1 import video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import DeadlineExceeded, FrameResult, NotFound


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_runs_frames_nodes_uploads_and_queue_depth_are_exported(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    port = free_port()
    server = make_server(metrics_port=port)
    list(server.client.upload_and_run(sample_clip, "frame_stats_v1"))
    with pytest.raises(NotFound):
        list(server.client.upload_and_run(sample_clip, "missing"))

    metrics = scrape(port)
    assert metrics[("videodag_runs_total", (("pipeline", "frame_stats_v1"), ("status", "OK")))] == 1
    assert metrics[("videodag_runs_total", (("pipeline", "unknown"), ("status", "NOT_FOUND")))] == 1
    assert metrics[("videodag_frames_processed_total", (("pipeline", "frame_stats_v1"),))] == 120
    node = (("node", "stats"), ("pipeline", "frame_stats_v1"), ("plugin", "stats.frame_stats"))
    assert metrics[("videodag_node_latency_seconds_count", node)] == 120
    assert metrics[("videodag_upload_bytes_total", (("pipeline", "frame_stats_v1"),))] == sample_clip.stat().st_size
    assert metrics[("videodag_queue_depth", (("queue", "jobs"),))] == 0
    method = ("method", "/videodag.v1.VideoPipelineService/UploadAndRun")
    upload_calls = [
        value for (name, labels), value in metrics.items() if name == "videodag_grpc_calls_total" and method in labels
    ]
    assert sum(upload_calls) == 2


def test_jobs_count_in_runs_frames_and_upload_bytes(make_server: ServerFactory, sample_clip: Path) -> None:
    """Embedded jobs count as runs do: OK, their error's status, or CANCELLED when cancelled while running."""
    port = free_port()
    server = make_server(metrics_port=port)
    client = server.client
    succeeded = client.submit_job(sample_clip, "frame_stats_v1")
    failed = client.submit_job(sample_clip, "failing")
    cancelled = client.submit_job(sample_clip, "slow")
    wait_for_job(client, cancelled.id, is_running_with_frames(2), what="the slow job to run")
    client.cancel_job(cancelled.id)
    for job_id in (succeeded.id, failed.id):
        wait_for_job(client, job_id, finished)
    runs_key = ("videodag_runs_total", (("pipeline", "slow"), ("status", "CANCELLED")))
    wait_until(lambda: scrape(port).get(runs_key) == 1, what="the cancelled run to be counted")

    metrics = scrape(port)
    runs = {labels: value for (name, labels), value in metrics.items() if name == "videodag_runs_total" and value}
    assert runs == {
        (("pipeline", "frame_stats_v1"), ("status", "OK")): 1,
        (("pipeline", "failing"), ("status", "INTERNAL")): 1,
        (("pipeline", "slow"), ("status", "CANCELLED")): 1,
    }
    assert metrics[("videodag_frames_processed_total", (("pipeline", "frame_stats_v1"),))] == 120
    assert metrics[("videodag_frames_processed_total", (("pipeline", "failing"),))] == 3
    slow_frames = metrics[("videodag_frames_processed_total", (("pipeline", "slow"),))]
    assert slow_frames == client.get_job(cancelled.id).frames_done < 120
    for pipeline in ("frame_stats_v1", "failing", "slow"):
        assert metrics[("videodag_upload_bytes_total", (("pipeline", pipeline),))] == sample_clip.stat().st_size


def test_a_watch_read_to_its_end_counts_as_ok(make_server: ServerFactory, make_video: Any) -> None:
    """The client reads a watch's end from the server instead of cancelling the call after its
    final event, which raced the server's own end and was often counted CANCELLED."""
    port = free_port()
    server = make_server(metrics_port=port)
    job = server.client.submit_job(make_video(3), "frame_stats_v1")
    wait_for_job(server.client, job.id, finished)
    watches = 10
    for _ in range(watches):
        with server.client.watch_job(job.id) as watch:
            assert [type(event).__name__ for event in watch][-1] == "Job"
    method = ("method", "/videodag.v1.VideoPipelineService/WatchJob")

    def counted() -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in scrape(port).items()
                if name == "videodag_grpc_calls_total" and method in labels and value}

    wait_until(lambda: sum(counted().values()) == watches, what="every watch to be counted")
    assert counted() == {(("code", "OK"), method): watches}


def test_a_deadline_passing_mid_upload_counts_as_such_and_a_client_leaving_as_cancelled(
    make_server: ServerFactory, sample_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """gRPC breaks the request stream with a bare error in both cases; the call's deadline tells them apart."""
    port = free_port()
    server = make_server(metrics_port=port)
    data = sample_clip.read_bytes()
    stalled = threading.Event()

    def upload_then_stall() -> Iterator[Request]:
        yield config()
        yield from list(chunks(data))[:2]
        stalled.wait(10)  # past the call's deadline

    with grpc.insecure_channel(server.target) as channel, caplog.at_level(logging.INFO):
        outcome = raw_call(channel, upload_then_stall(), timeout=1.0)
        stalled.set()
        assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED
        stream = server.client.upload_and_run(sample_clip, "frame_stats_v1")
        next(event for event in stream if isinstance(event, FrameResult))
        stream.close()  # the client leaves mid-frames

    pipeline = ("pipeline", "frame_stats_v1")
    deadline_key = ("videodag_runs_total", (pipeline, ("status", "DEADLINE_EXCEEDED")))
    cancelled_key = ("videodag_runs_total", (pipeline, ("status", "CANCELLED")))
    method = ("method", "/videodag.v1.VideoPipelineService/UploadAndRun")

    def calls() -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in scrape(port).items()
                if name == "videodag_grpc_calls_total" and method in labels and value}

    # The run is counted in the handler, the call by the interceptor after it has unwound.
    wait_until(lambda: scrape(port).get(cancelled_key) == 1 and sum(calls().values()) == 2,
               what="the run the client left and its call to be counted")
    assert scrape(port)[deadline_key] == 1
    assert calls() == {(("code", "CANCELLED"), method): 1, (("code", "DEADLINE_EXCEEDED"), method): 1}
    # Either the stream broke while read, or gRPC ended it as if complete and the call was found ended right after.
    assert any("DEADLINE_EXCEEDED: the call's deadline passed" in record.getMessage() for record in caplog.records)
    assert server.leftover_uploads() == []


def test_a_deadline_passing_while_the_server_waits_to_send_counts_as_such(
    make_server: ServerFactory, make_video
) -> None:
    """The client stops reading; gRPC blocks in a send; the deadline passes there and gRPC
    closes the handler's stream, which says nothing of why: the call's deadline tells."""
    port = free_port()
    server = make_server(metrics_port=port)
    stream = server.client.upload_and_run(make_video(2000), "padded", timeout=2.0)
    next(event for event in stream if isinstance(event, FrameResult))
    time.sleep(3.0)  # past the deadline, reading nothing: the 64 KiB results fill the transport
    with pytest.raises(DeadlineExceeded):
        for _ in stream:
            pass

    key = ("videodag_runs_total", (("pipeline", "padded"), ("status", "DEADLINE_EXCEEDED")))
    wait_until(lambda: scrape(port).get(key) == 1, what="the run its deadline ended to be counted")
    method = ("method", "/videodag.v1.VideoPipelineService/UploadAndRun")
    calls = {labels: value for (name, labels), value in scrape(port).items()
             if name == "videodag_grpc_calls_total" and method in labels and value}
    assert calls == {(("code", "DEADLINE_EXCEEDED"), method): 1}
    assert server.leftover_uploads() == []


def test_a_reflection_stream_the_client_cancels_counts_as_cancelled(make_server: ServerFactory) -> None:
    """gRPC's reflection servicer raises when its request stream is cancelled under it; a call
    that has ended counts as cancelled, not as a server fault (UNKNOWN)."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    port = free_port()
    server = make_server(metrics_port=port)
    leave = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        leave.wait(10)  # the stream stays open, as a debugging tool's does

    method = ("method", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with grpc.insecure_channel(server.target) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests(), timeout=30)
        assert next(call).list_services_response.service
        call.cancel()
    leave.set()

    def counted() -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in scrape(port).items()
                if name == "videodag_grpc_calls_total" and method in labels and value}

    wait_until(lambda: counted() != {}, what="the reflection call to be counted")
    # Never UNKNOWN. gRPC itself may end the request stream (client half-closed) before it
    # marks the call cancelled, and the servicer then returns normally on a call still active,
    # counted OK: a race that happens now and then; nothing the server is told tells it apart.
    (((_, code), _),) = counted()
    assert code in {"CANCELLED", "OK"}
    assert sum(counted().values()) == 1


def test_a_reflection_stream_the_server_ends_for_idling_counts_as_ok(make_server: ServerFactory) -> None:
    """The server ends a stream that asks nothing for a while as its client would close it: an
    OK call, not an error, and no longer an open stream."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    port = free_port()
    server = make_server(metrics_port=port, reflection_idle_timeout_seconds=0.5)
    leave = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        leave.wait(10)  # the stream stays open, as grpcurl's does while its call runs

    method = ("method", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with grpc.insecure_channel(server.target) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests(), timeout=30)
        try:
            assert [len(response.list_services_response.service) for response in call] == [4]
            assert call.code() == grpc.StatusCode.OK
        finally:
            leave.set()

    def counted() -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in scrape(port).items()
                if name == "videodag_grpc_calls_total" and method in labels and value}

    wait_until(lambda: counted() != {}, what="the reflection call to be counted")
    assert counted() == {(("code", "OK"), method): 1}
    assert scrape(port)[("videodag_active_streams", (method,))] == 0


def test_a_health_watch_the_client_cancels_counts_as_cancelled(make_server: ServerFactory) -> None:
    """gRPC's health servicer ends a Watch quietly when its client cancels; that call did not end OK."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    server = make_server(metrics_port=port)
    method = ("method", "/grpc.health.v1.Health/Watch")
    watches = 8  # how the servicer notices a cancel varies: some ended quietly, some not
    with grpc.insecure_channel(server.target) as channel:
        for _ in range(watches):
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(call).status == health_pb2.HealthCheckResponse.SERVING
            call.cancel()

    def counted() -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in scrape(port).items()
                if name == "videodag_grpc_calls_total" and method in labels and value}

    wait_until(lambda: sum(counted().values()) == watches, what="every health watch to be counted")
    assert counted() == {(("code", "CANCELLED"), method): watches}


def test_a_metrics_port_in_use_is_named_as_such_and_nothing_is_left_serving(make_server: ServerFactory) -> None:
    """It said only '[Errno 98] Address already in use', and the gRPC server it had started kept serving."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        grpc_port = free_port()
        refusal = rf"could not listen on 127\.0\.0\.1:{port} for the metrics \(--metrics-port\)"
        with pytest.raises(OSError, match=refusal):
            make_server(metrics_port=port, port=grpc_port)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0, "the gRPC port was left serving"


def test_a_client_retry_policy_retries_the_servers_refusals(make_server: ServerFactory, sample_clip: Path) -> None:
    """The request id, sent in headers at every call's start, made each refusal a committed
    call that no gRPC client's `retryPolicy` retried: each refused call below was tried once."""
    port = free_port()
    server = make_server(metrics_port=port)
    retrying = json.dumps({"methodConfig": [{
        "name": [{"service": "videodag.v1.VideoPipelineService"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.01s",
                        "backoffMultiplier": 1, "retryableStatusCodes": ["NOT_FOUND"]},
    }]})
    with grpc.insecure_channel(server.target, options=[("grpc.service_config", retrying)]) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unary:
            stub.GetPipeline(video_pipeline_service_pb2.GetPipelineRequest(pipeline_id="missing"), timeout=30)
        upload = raw_call(channel, [config("missing"), *chunks(sample_clip.read_bytes()[:100_000])])

    assert unary.value.code() is grpc.StatusCode.NOT_FOUND and upload.code is grpc.StatusCode.NOT_FOUND
    metrics = scrape(port)
    for method in ("GetPipeline", "UploadAndRun"):
        labels = (("code", "NOT_FOUND"), ("method", f"/videodag.v1.VideoPipelineService/{method}"))
        assert metrics[("videodag_grpc_calls_total", labels)] == 3, method
