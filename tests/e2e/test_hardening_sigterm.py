"""SIGTERM to a real `videodag-server` process: drain with health NOT_SERVING, finish or cancel, exit 0, clean."""

from __future__ import annotations

import os
import re
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hardening_support import health_status, wait_until
from harness import TEST_PIPELINES
from jobs_harness import SERVER_MODULE, SERVER_SCRIPT, ServerProcess, install_test_plugin, subprocess_environment

from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import FrameResult, RunOptions, RunSummary, Unavailable, VideodagClient

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@contextmanager
def server_process(root: Path, grace_seconds: float, data_dir: Path | None = None
                   ) -> Iterator[tuple[ServerProcess, Path]]:
    """`videodag-server` with the test plugin installed as an entry point and the `slow` pipeline;
    its data directory is `root`/data unless another (one kept across restarts) is given."""
    pipelines = root / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / "slow.yaml").write_text(textwrap.dedent(TEST_PIPELINES["slow"]))
    uploads = root / "uploads"
    arguments = [
        "--host", "127.0.0.1", "--port", "0", "--pipeline-dir", str(pipelines), "--temp-dir", str(uploads),
        "--data-dir", str(data_dir or root / "data"), "--shutdown-grace-seconds", str(grace_seconds),
        "--log-format", "text",
    ]
    process = ServerProcess(arguments, subprocess_environment(install_test_plugin(root / "site")), root / "server.log")
    try:
        yield process, uploads
    finally:
        process.kill()  # no-op once it has exited; closes the log


def server_log(root: Path) -> str:
    """The end of the server's log, for a failure's message."""
    return "server log:\n" + (root / "server.log").read_text(errors="replace")[-3000:]


def leftover(uploads: Path) -> list[str]:
    return sorted(os.listdir(uploads)) if uploads.exists() else []


def test_sigterm_drains_finishes_the_run_in_flight_and_exits_cleanly(make_video, tmp_path: Path) -> None:
    with server_process(tmp_path, grace_seconds=20) as (process, uploads):
        target = f"127.0.0.1:{process.port}"
        with VideodagClient(target) as client:
            stream = client.upload_and_run(make_video(60), "slow", timeout=30)  # 60 frames x 50 ms
            assert isinstance(next(e for e in stream if isinstance(e, FrameResult)), FrameResult)
            signalled = time.monotonic()
            os.kill(process.process.pid, signal.SIGTERM)

            assert wait_until(lambda: health_status(target) == NOT_SERVING, timeout=15), server_log(tmp_path)
            with pytest.raises(Unavailable) as refused:
                list(client.upload_and_run(make_video(5), "slow", timeout=10))
            assert refused.value.reason == "SERVER_DRAINING"
            rest = list(stream)

        assert [e.frame_index for e in rest if isinstance(e, FrameResult)] == list(range(1, 60))
        assert isinstance(rest[-1], RunSummary) and rest[-1].frames_processed == 60
        assert process.process.wait(timeout=15) == 0
        assert time.monotonic() - signalled < 20
        assert leftover(uploads) == []


def test_sigterm_with_a_short_grace_cancels_the_run_in_flight_and_exits_cleanly(
    make_video, tmp_path: Path
) -> None:
    with server_process(tmp_path, grace_seconds=0.5) as (process, uploads):
        with VideodagClient(f"127.0.0.1:{process.port}") as client:
            stream = client.upload_and_run(make_video(200), "slow", timeout=30)  # 10 s of work
            next(e for e in stream if isinstance(e, FrameResult))
            signalled = time.monotonic()
            os.kill(process.process.pid, signal.SIGTERM)
            with pytest.raises(Unavailable) as ended_by_the_server:
                list(stream)
            ended = time.monotonic() - signalled
            assert ended_by_the_server.value.reason == "SERVER_DRAINING", "a typed end its client can act on"

        assert ended < 5
        assert process.process.wait(timeout=10) == 0
        assert leftover(uploads) == []
        log = (tmp_path / "server.log").read_text()
        assert "the client cancelled" not in log  # the server ended the run, and says so
        assert "the server shut down before the run ended" in log


def test_sigterm_keeps_job_calls_served_while_a_job_runs_and_a_clean_stop_costs_the_job_no_attempt(
    make_video, tmp_path: Path
) -> None:
    """Rolling restarts stop a long job again and again: each clean stop queues it again in the
    same attempt, so it is never given up (attempts count runs that vanished, not shutdowns)."""
    video = make_video(100)  # 5 s of work, longer than the grace
    job_id = ""
    for restart in range(4):
        job_id = _sigterm_while_the_job_runs(tmp_path / f"start-{restart}", tmp_path / "data", video, job_id)

    with server_process(tmp_path / "last-start", 2, tmp_path / "data") as (process, _uploads):
        with VideodagClient(f"127.0.0.1:{process.port}") as client:
            assert wait_until(lambda: client.get_job(job_id).state.name == "SUCCEEDED", timeout=30)
            done = client.get_job(job_id)
            assert (done.attempt, done.frames_done) == (1, 100)
            assert [job.id for job in client.list_jobs().jobs] == [job_id], "nothing else was queued"
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=15) == 0
    assert [path for path in (tmp_path / "data" / "uploads").iterdir() if path.is_file()] == [], "video deleted"


def test_a_watch_open_when_the_grace_ends_is_told_the_server_is_draining(make_video, tmp_path: Path) -> None:
    with server_process(tmp_path, grace_seconds=1) as (process, _uploads):
        with VideodagClient(f"127.0.0.1:{process.port}") as client:
            job = client.submit_job(make_video(200), "slow")  # 10 s of work
            with closing(client.watch_job(job.id, reconnect_window=0)) as watch:
                events = iter(watch)
                next(events)
                os.kill(process.process.pid, signal.SIGTERM)
                with pytest.raises(Unavailable) as ended:
                    for _ in events:
                        pass
        assert ended.value.reason == "SERVER_DRAINING"
        assert process.process.wait(timeout=15) == 0


def _sigterm_while_the_job_runs(root: Path, data_dir: Path, video: Path, job_id: str) -> str:
    """Start a server (submitting the job if `job_id` is empty), SIGTERM it once the job runs,
    and check the drain while the job runs out the grace; returns the job's id."""
    with server_process(root, 2, data_dir) as (process, _uploads):
        target = f"127.0.0.1:{process.port}"
        with VideodagClient(target) as client:
            job_id = job_id or client.submit_job(video, "slow").id
            assert wait_until(lambda: client.get_job(job_id).frames_done > 0, timeout=20)
            os.kill(process.process.pid, signal.SIGTERM)

            assert wait_until(lambda: health_status(target) == NOT_SERVING, timeout=15), server_log(root)
            # The port stays open while the job runs out the grace: lookups are answered, new
            # work is refused with a typed error, not a refused connection.
            assert client.get_job(job_id).attempt == 1
            with pytest.raises(Unavailable) as refused:
                client.submit_job(video, "slow")
            assert refused.value.reason == "SERVER_DRAINING"
        assert process.process.wait(timeout=15) == 0
    return job_id


@pytest.mark.parametrize("command", [SERVER_SCRIPT, SERVER_MODULE], ids=["videodag-server", "python -m"])
def test_a_server_started_either_way_runs_its_decoders_without_warnings(
    sample_clip: Path, tmp_path: Path, command: list[str]
) -> None:
    # Each decoder process runs the server's main module again; under `python -m` runpy used
    # to warn in every decoder's stderr that the module was imported already.
    arguments = ["--host", "127.0.0.1", "--port", "0", "--temp-dir", str(tmp_path / "uploads"),
                 "--data-dir", str(tmp_path / "data"), "--log-level", "WARNING"]
    log = tmp_path / "server.log"
    process = ServerProcess(arguments, subprocess_environment(tmp_path / "site"), log, command)
    try:
        with VideodagClient(f"127.0.0.1:{process.port}") as client:
            for _ in range(2):
                events = list(client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(max_frames=3)))
                assert isinstance(events[-1], RunSummary) and events[-1].frames_processed == 3
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(30) == 0
    finally:
        process.kill()
    assert "Warning" not in log.read_text()


@pytest.mark.parametrize("method", ["SubmitJob", "UploadAndRun"])
def test_an_upload_still_arriving_when_the_grace_ends_is_logged_as_the_shutdowns_doing(
    make_video, tmp_path: Path, method: str
) -> None:
    """gRPC's cancel of the calls left at the end of the grace is the shutdown's doing, not the
    client's: logged and counted UNAVAILABLE, never "the client cancelled", CANCELLED."""
    video = make_video(20).read_bytes()
    run_config = run_pb2.RunConfig(pipeline_id="slow")
    first = (video_pipeline_service_pb2.SubmitJobRequest(
        config=video_pipeline_service_pb2.SubmitJobConfig(run_config=run_config)) if method == "SubmitJob"
        else video_pipeline_service_pb2.UploadAndRunRequest(config=run_config))
    chunk = type(first)(chunk=video[:1000])
    with server_process(tmp_path, grace_seconds=1) as (process, _uploads):
        with grpc.insecure_channel(f"127.0.0.1:{process.port}") as channel:
            stalled = threading.Event()

            def stalling_upload() -> Iterator[object]:
                yield first
                yield chunk
                stalled.set()
                time.sleep(30)

            stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
            seen: list[grpc.StatusCode] = []

            def call() -> None:
                try:
                    if method == "SubmitJob":
                        stub.SubmitJob(stalling_upload(), timeout=60)
                    else:
                        list(stub.UploadAndRun(stalling_upload(), timeout=60))
                except grpc.RpcError as error:
                    seen.append(error.code())

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            assert stalled.wait(10)
            time.sleep(0.5)
            os.kill(process.process.pid, signal.SIGTERM)
            assert process.process.wait(timeout=20) == 0
            caller.join(timeout=10)
            assert seen == [grpc.StatusCode.UNAVAILABLE]
        log = (tmp_path / "server.log").read_text()
    # "before the upload ended", or "the run" once the upload is in: the run's watch may see the end first.
    assert re.search(r"call ended: UNAVAILABLE: the server shut down before the (upload|run) ended; retry on another "
                     "replica", log), server_log(tmp_path)
    assert f"/{method} UNAVAILABLE" in log and f"/{method} CANCELLED" not in log, server_log(tmp_path)
