"""Calls that hold a server thread for long have caps of their own: each WatchJob stream holds
one while its job runs, each SubmitJob while its upload arrives. Without the caps enough of
them took every thread, so that runs, listings and even job lookups got gRPC's bare
"Concurrent RPC limit exceeded"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hardening_support import wait_until
from harness import ServerFactory

from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import JobState, ResourceExhausted, RunOptions, RunSummary

WATCHES = 2


def test_a_watch_over_the_cap_is_refused_typed_while_other_calls_are_served(
    make_server: ServerFactory, thousand_frame_video: Path, make_video
) -> None:
    server = make_server(max_job_watches=WATCHES)
    client = server.client
    job = client.submit_job(thousand_frame_video, "slow")  # 0.05 s a frame: it runs for the whole test
    with ExitStack() as open_watches:
        for _ in range(WATCHES):
            watch = open_watches.enter_context(closing(client.watch_job(job.id, reconnect_window=0)))
            next(iter(watch))  # the stream is open and has answered

        with pytest.raises(ResourceExhausted) as refused:
            next(iter(client.watch_job(job.id, reconnect_window=0)))
        assert refused.value.reason == "TOO_MANY_WATCHES"
        assert refused.value.metadata["max_job_watches"] == str(WATCHES)
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert f"maximum of {WATCHES} job watches" in refused.value.message

        # Everything else still has a thread: lookups, listings, a whole run.
        assert client.get_job(job.id).state in {JobState.QUEUED, JobState.RUNNING}
        assert "frame_stats_v1" in {pipeline.id for pipeline in client.list_pipelines()}
        events = list(client.upload_and_run(make_video(3), "frame_stats_v1", RunOptions(), timeout=30))
        assert isinstance(events[-1], RunSummary) and events[-1].frames_processed == 3

    # The closed watches give their slots back once the server has seen them go (a moment).
    def watch_accepted() -> bool:
        try:
            with closing(client.watch_job(job.id, reconnect_window=0)) as watch:
                return getattr(next(iter(watch)), "id", None) == job.id
        except ResourceExhausted:
            return False

    assert wait_until(watch_accepted, timeout=10, interval=0.1)
    assert client.cancel_job(job.id).state is JobState.CANCELLED


def _held_submission(video: bytes, release: threading.Event) -> Iterator[video_pipeline_service_pb2.SubmitJobRequest]:
    """A config and the first chunk, then nothing until released: a slow uploader holding its slot."""
    config = video_pipeline_service_pb2.SubmitJobConfig(run_config=run_pb2.RunConfig(pipeline_id="frame_stats_v1"))
    yield video_pipeline_service_pb2.SubmitJobRequest(config=config)
    yield video_pipeline_service_pb2.SubmitJobRequest(chunk=video[:4096])
    release.wait(30)
    yield video_pipeline_service_pb2.SubmitJobRequest(chunk=video[4096:])


def test_a_job_upload_over_the_cap_is_refused_typed_and_the_held_one_completes(
    make_server: ServerFactory, make_video
) -> None:
    server = make_server(max_job_uploads=1)
    video = make_video(5).read_bytes()
    release = threading.Event()
    with grpc.insecure_channel(server.target) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        held = stub.SubmitJob.future(_held_submission(video, release), timeout=60)
        try:
            assert wait_until(lambda: any(t.startswith("videodag-upload") for t in server.run_threads()))
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitJob(iter(_held_submission(video, threading.Event())), timeout=30)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(refused.value)
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            assert any(detail.Unpack(info) for detail in status.details)
            assert (info.reason, dict(info.metadata)) == ("TOO_MANY_UPLOADS", {"max_job_uploads": "1"})
            assert "maximum of 1 job upload;" in (refused.value.details() or "")
            assert "frame_stats_v1" in {pipeline.id for pipeline in server.client.list_pipelines()}
        finally:
            release.set()
        job = held.result(timeout=60).job
    assert server.client.get_job(job.id).size_bytes == len(video)

    # The finished upload gave its slot back: the next submission is taken.
    assert server.client.submit_job(make_video(3), "frame_stats_v1").state in {JobState.QUEUED, JobState.RUNNING,
                                                                              JobState.SUCCEEDED}
