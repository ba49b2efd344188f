"""A client that stops sending mid-upload is cut off after the idle limit, on every upload path,
and leaves nothing held: no run slot, no temp file, no thread, no job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from hardening_support import Request, assert_still_serving, chunks, config, health_status, raw_call, wait_until
from harness import ServerFactory, ServerHarness

from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import DeadlineExceeded, FrameResult, RunSummary

IDLE_SECONDS = 0.5


def _silent_after(first: list[Request], stop: threading.Event) -> Iterator[Request]:
    """The given messages, then nothing until `stop` (set by the test once the call is over)."""
    yield from first
    stop.wait(30)


def _error_info(error: grpc.Call) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def _upload_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("videodag-upload")]


@pytest.fixture
def idle_server(make_server: ServerFactory, tmp_path: Path) -> ServerHarness:
    # One run slot: a silent client that kept it would refuse everyone after it.
    return make_server(upload_idle_timeout_seconds=IDLE_SECONDS, max_concurrent_runs=1, data_dir=tmp_path / "jobs")


@pytest.mark.parametrize("decode_during_upload", [False, True], ids=["stored first", "decoded as it arrives"])
def test_a_silent_upload_is_cut_off_and_frees_its_slot_file_and_threads(
    idle_server: ServerHarness, sample_clip: Path, decode_during_upload: bool
) -> None:
    data = sample_clip.read_bytes()
    stop = threading.Event()
    first = [config(declared_size_bytes=len(data), decode_during_upload=decode_during_upload),
             *list(chunks(data))[:2]]
    with grpc.insecure_channel(idle_server.target) as channel:
        started = time.monotonic()
        outcome = raw_call(channel, _silent_after(first, stop), timeout=30)
        elapsed = time.monotonic() - started
    stop.set()

    assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED, outcome.details
    assert f"the upload sent no bytes for {IDLE_SECONDS:g} s" in outcome.details
    assert IDLE_SECONDS <= elapsed < 15
    assert idle_server.uploads_left_after() == []
    assert wait_until(lambda: _upload_threads() == [])
    # The slot is free again: the next caller runs, not RESOURCE_EXHAUSTED.
    assert_still_serving(idle_server, sample_clip)


def test_the_refusal_names_its_reason_and_limit(idle_server: ServerHarness, sample_clip: Path) -> None:
    stop = threading.Event()
    requests = _silent_after([config(), *list(chunks(sample_clip.read_bytes()))[:1]], stop)
    with grpc.insecure_channel(idle_server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        list(video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).UploadAndRun(requests, timeout=30))
    stop.set()
    info = _error_info(raised.value)  # type: ignore[arg-type]
    assert (info.reason, info.domain) == ("UPLOAD_IDLE", "videodag.dev")
    assert info.metadata["upload_idle_timeout_seconds"] == f"{IDLE_SECONDS:g}"


def test_a_silent_job_submission_is_cut_off_and_queues_nothing(
    idle_server: ServerHarness, sample_clip: Path, tmp_path: Path
) -> None:
    stop = threading.Event()
    data = sample_clip.read_bytes()
    submit = video_pipeline_service_pb2.SubmitJobRequest
    requests = _silent_after(
        [submit(config=video_pipeline_service_pb2.SubmitJobConfig(
            run_config=run_pb2.RunConfig(pipeline_id="frame_stats_v1", declared_size_bytes=len(data)))),
         submit(chunk=data[: 64 * 1024])],
        stop,
    )
    with grpc.insecure_channel(idle_server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).SubmitJob(requests, timeout=30)
    stop.set()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert _error_info(raised.value).reason == "UPLOAD_IDLE"  # type: ignore[arg-type]
    incoming = tmp_path / "jobs" / "uploads" / "incoming"
    assert wait_until(lambda: not any(incoming.iterdir()))
    assert idle_server.client.list_jobs().jobs == ()
    assert wait_until(lambda: _upload_threads() == [])


def test_an_upload_that_is_slow_but_never_silent_for_the_limit_runs_to_the_end(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    # A limit of its own, well above each pause: a stall of the shared machine must not look silent.
    idle_seconds = 1.5
    server = make_server(upload_idle_timeout_seconds=idle_seconds)
    data = sample_clip.read_bytes()
    pieces = list(chunks(data, size=len(data) // 6 + 1))

    def paced() -> Iterator[Request]:
        yield config(declared_size_bytes=len(data))
        for piece in pieces:
            time.sleep(0.3)  # 7 pauses: longer than the limit in all, never at once
            yield piece

    with grpc.insecure_channel(server.target) as channel:
        outcome = raw_call(channel, paced(), timeout=60)
    assert outcome.code == grpc.StatusCode.OK, outcome.details
    assert outcome.frames == list(range(120))


def _trickling_after(first: list[Any], stop: threading.Event, make: Callable[[bytes], Any]) -> Iterator[Any]:
    """The given messages, then 10 bytes every 0.1 s (100 bytes a second) until `stop`."""
    yield from first
    while not stop.wait(0.1):
        yield make(b"0123456789")


@pytest.fixture
def rate_server(make_server: ServerFactory, tmp_path: Path) -> ServerHarness:
    # One run slot, as for silence: a client trickling bytes would keep it for good.
    return make_server(upload_idle_timeout_seconds=1.0, upload_min_bytes_per_second=1000, max_concurrent_runs=1,
                       data_dir=tmp_path / "jobs")


@pytest.mark.parametrize("decode_during_upload", [False, True], ids=["stored first", "decoded as it arrives"])
def test_an_upload_trickling_under_the_minimum_rate_is_cut_off_and_frees_its_slot(
    rate_server: ServerHarness, sample_clip: Path, decode_during_upload: bool
) -> None:
    data = sample_clip.read_bytes()
    stop = threading.Event()
    first = [config(declared_size_bytes=len(data), decode_during_upload=decode_during_upload)]
    with grpc.insecure_channel(rate_server.target) as channel:
        started = time.monotonic()
        outcome = raw_call(channel, _trickling_after(first, stop, lambda data: Request(chunk=data)), timeout=30)
        elapsed = time.monotonic() - started
    stop.set()

    assert outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED, outcome.details
    assert "in 1 s, under the server's minimum of 1000 bytes a second" in outcome.details
    assert 1.0 <= elapsed < 15
    assert rate_server.uploads_left_after() == []
    assert wait_until(lambda: _upload_threads() == [])
    assert_still_serving(rate_server, sample_clip)


def test_a_job_submission_trickling_under_the_minimum_rate_is_cut_off_and_queues_nothing(
    rate_server: ServerHarness, tmp_path: Path
) -> None:
    stop = threading.Event()
    submit = video_pipeline_service_pb2.SubmitJobRequest
    first = [submit(config=video_pipeline_service_pb2.SubmitJobConfig(
        run_config=run_pb2.RunConfig(pipeline_id="frame_stats_v1")))]
    requests = _trickling_after(first, stop, lambda data: submit(chunk=data))
    with grpc.insecure_channel(rate_server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).SubmitJob(requests, timeout=30)
    stop.set()
    info = _error_info(raised.value)  # type: ignore[arg-type]
    assert (info.reason, info.metadata["upload_min_bytes_per_second"]) == ("UPLOAD_IDLE", "1000")
    incoming = tmp_path / "jobs" / "uploads" / "incoming"
    assert wait_until(lambda: not any(incoming.iterdir()))
    assert rate_server.client.list_jobs().jobs == ()


def test_the_python_client_sees_the_cut_off_as_deadline_exceeded(idle_server: ServerHarness) -> None:
    class SilentFile:
        """A pipe that delivers 64 KiB, then waits (a stuck producer)."""

        def __init__(self) -> None:
            self.stop = threading.Event()
            self._sent = False

        def read(self, size: int = -1) -> bytes:
            if not self._sent:
                self._sent = True
                return b"\0" * 65536
            self.stop.wait(30)
            return b""

        def seekable(self) -> bool:
            return False

    source = SilentFile()
    with pytest.raises(DeadlineExceeded) as raised:
        for event in idle_server.client.upload_and_run(source, "frame_stats_v1"):  # type: ignore[arg-type]
            assert not isinstance(event, FrameResult | RunSummary)
    source.stop.set()
    assert raised.value.reason == "UPLOAD_IDLE"
    assert raised.value.metadata == {"upload_idle_timeout_seconds": f"{IDLE_SECONDS:g}"}


def test_a_submission_its_client_cancels_midway_never_becomes_a_job(idle_server: ServerHarness, tmp_path: Path) -> None:
    """Without a declared size, a cancelled upload's end looks like a whole upload's to the
    server for a moment; it must not queue a job on the bytes that came before the cancel."""
    submit = video_pipeline_service_pb2.SubmitJobRequest
    first = submit(config=video_pipeline_service_pb2.SubmitJobConfig(
        run_config=run_pb2.RunConfig(pipeline_id="frame_stats_v1")))

    def flowing(stop: threading.Event) -> Iterator[video_pipeline_service_pb2.SubmitJobRequest]:
        yield first
        while not stop.is_set():  # chunks keep coming until the cancel, as from a slow pipe
            time.sleep(0.01)
            yield submit(chunk=b"\0" * 4096)

    with grpc.insecure_channel(idle_server.target) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        for attempt in range(20):  # the end and the cancel's report race: many tries, none may queue a job
            stop = threading.Event()
            call = stub.SubmitJob.future(flowing(stop), timeout=30)
            time.sleep(0.1 + 0.005 * attempt)
            call.cancel()
            stop.set()
    incoming = tmp_path / "jobs" / "uploads" / "incoming"
    assert wait_until(lambda: not any(incoming.iterdir()))
    time.sleep(0.5)  # a job wrongly queued would be in the store by now
    assert idle_server.client.list_jobs().jobs == ()


def test_a_stream_that_never_sends_its_config_is_cut_off_and_frees_its_slot(
    idle_server: ServerHarness, sample_clip: Path
) -> None:
    stop = threading.Event()
    with grpc.insecure_channel(idle_server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        started = time.monotonic()
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        list(stub.UploadAndRun(_silent_after([], stop), timeout=30))
    elapsed = time.monotonic() - started
    stop.set()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert f"the call sent no config message for {IDLE_SECONDS:g} s" in raised.value.details()  # type: ignore[attr-defined]
    assert _error_info(raised.value).reason == "UPLOAD_IDLE"  # type: ignore[arg-type]
    assert IDLE_SECONDS <= elapsed < 15
    assert wait_until(lambda: _upload_threads() == [])
    assert_still_serving(idle_server, sample_clip)


def test_a_job_submission_that_never_sends_its_config_is_cut_off_and_frees_its_upload_slot(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path
) -> None:
    server = make_server(upload_idle_timeout_seconds=IDLE_SECONDS, max_job_uploads=1, data_dir=tmp_path / "jobs")
    stop = threading.Event()
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
        video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).SubmitJob(_silent_after([], stop), timeout=30)
    stop.set()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert _error_info(raised.value).reason == "UPLOAD_IDLE"  # type: ignore[arg-type]
    # The only upload slot is free again: a real submission is taken.
    job = server.client.submit_job(sample_clip, "frame_stats_v1")
    assert job.pipeline_id == "frame_stats_v1"


def test_silent_streams_hold_no_more_threads_than_run_slots_and_their_line_so_every_other_call_is_answered(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path
) -> None:
    """Many clients open UploadAndRun and send nothing. The server's thread pool is small here
    (a run, its line, a watch, an upload and its spare threads): were each silent stream to hold a
    thread, health checks and every other call would be refused by gRPC itself."""
    waiting = 4
    server = make_server(max_concurrent_runs=1, max_waiting_runs=waiting, max_job_watches=1, max_job_uploads=1,
                         data_dir=tmp_path / "jobs")
    silent_streams = 48  # more than the pool's threads
    stop = threading.Event()
    outcomes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(server.target) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        calls = [stub.UploadAndRun(_silent_after([], stop), timeout=30) for _ in range(silent_streams)]
        try:
            # One stream holds the only run slot, four wait in line; every other is refused at once, typed.
            assert wait_until(lambda: sum(call.done() for call in calls) == silent_streams - 1 - waiting)
            refused = [_error_info(call) for call in calls if call.done()]  # type: ignore[arg-type]
            assert [info.reason for info in refused] == ["TOO_MANY_RUNS"] * (silent_streams - 1 - waiting)
            assert server.running.run_slots.waiting == waiting
            assert all(info.metadata["max_concurrent_runs"] == "1" for info in refused)
            assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
            assert [p.id for p in server.client.list_pipelines()]
        finally:
            stop.set()
            for call in calls:
                call.cancel()
                outcomes.append(call.code())
    assert grpc.StatusCode.OK not in outcomes
