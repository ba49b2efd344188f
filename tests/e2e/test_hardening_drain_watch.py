"""A watch that ends as it should while the shutdown grace is ending is a whole watch, not a failure."""

from __future__ import annotations

from pathlib import Path

import grpc
from harness import ServerFactory

from fakes.waiting import wait_until
from videodag.v1 import job_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import JobState, RunOptions


def test_a_watch_that_reaches_the_final_state_after_the_grace_ended_ends_ok(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    server = make_server()
    job = server.client.submit_job(sample_clip, "frame_stats_v1", RunOptions(max_frames=5))
    assert wait_until(lambda: server.client.get_job(job.id).state is JobState.SUCCEEDED, timeout=30)

    with grpc.insecure_channel(server.target) as channel:  # a raw stub: it sees the stream's own status
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        stream = stub.WatchJob(video_pipeline_service_pb2.WatchJobRequest(job_id=job.id), timeout=10)
        responses = [next(stream)]
        server.running.run_slots.end_calls()  # the grace ends while the replay is under way
        responses += list(stream)

    assert [r.frame.frame_index for r in responses if r.HasField("frame")] == list(range(5))
    assert responses[-1].job.state == job_pb2.JOB_STATE_SUCCEEDED
