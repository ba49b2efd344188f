"""The Redis + RQ backend at scale: several replicas share one Redis, several workers run jobs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from jobs_harness import (
    SERVER_SCRIPT,
    JobsDeployment,
    RqWorker,
    SlowStart,
    deployment,
    finished,
    is_running_with_frames,
    wait_for_job,
    wait_until,
    watch_all,
)

from fakes.logs import why_it_ended
from fakes.redis_server import free_port
from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import Internal, Job, JobState, NotFound, RunOptions, Unavailable, VideodagClient
from videodag_client._errors import from_grpc_error


def test_a_job_submitted_to_one_replica_is_watched_and_cancelled_from_another(
    tmp_path: Path, sample_clip: Path
) -> None:
    with deployment("redis", tmp_path, workers=2) as jobs:
        replica_a = jobs.start_server()
        replica_b = jobs.start_server()
        first = replica_a.submit_job(sample_clip, "paced", RunOptions(max_frames=30))
        second = replica_a.submit_job(sample_clip, "paced")
        # Both run at once: one per worker process.
        wait_for_job(replica_b, first.id, is_running_with_frames(1), what="the first job on a worker")
        wait_for_job(replica_b, second.id, is_running_with_frames(1), what="the second job on the other worker")

        frames, updates = watch_all(replica_b, first.id)
        cancelled = replica_b.cancel_job(second.id)

        assert [frame.frame_index for frame in frames] == list(range(30))
        assert updates[-1].state is JobState.SUCCEEDED
        assert cancelled.state is JobState.CANCELLED
        assert replica_a.get_job(second.id).state is JobState.CANCELLED
        assert {job.id for job in replica_a.list_jobs().jobs} == {job.id for job in replica_b.list_jobs().jobs}
        assert wait_for_job(replica_a, second.id, finished).frames_done < 120


def test_with_a_retention_of_0_a_watch_on_one_replica_gets_its_jobs_end_though_others_purge(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Each replica kept only the jobs its own watches watched: another one removed the job
    between the watch's last frame and its final read, and the watch ended NOT_FOUND."""
    with deployment("redis", tmp_path, job_retention_seconds=0.0) as jobs:
        watcher, *others = [jobs.start_server() for _ in range(3)]
        for _ in range(3):
            job = others[0].submit_job(sample_clip, "paced", RunOptions(max_frames=20))
            frames, updates = watch_all(watcher, job.id)
            assert [frame.frame_index for frame in frames] == list(range(20))
            assert updates[-1].state is JobState.SUCCEEDED


def test_a_worker_applies_the_node_time_limit(tmp_path: Path, sample_clip: Path) -> None:
    """A node stuck on a frame fails the job on an RQ worker as it would inside the server."""
    with deployment("redis", tmp_path, node_timeout_seconds=1.0) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "hanging", RunOptions(max_frames=10))
        failed = wait_for_job(client, job.id, finished)
        assert failed.state is JobState.FAILED
        assert isinstance(failed.error, Internal) and failed.error.reason == "NODE_TIMED_OUT"
        assert failed.error.metadata["frame_index"] == "2"
        assert failed.frames_done == 2


def test_a_job_whose_worker_cannot_load_its_pipelines_fails_saying_so(tmp_path: Path, sample_clip: Path) -> None:
    """A shared pipeline folder edited into an invalid one after the replicas started (workers load
    it for each job): left to RQ, the task would fail there unclaimed, and the job be handed over
    again and again, to be given up in the end as vanished, without a word of why."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        broken = jobs.pipeline_dir / "broken.yaml"
        broken.write_text("id: broken\nversion: '1'\nnodes:\n  - id: a\n    plugin: no_such.plugin\noutputs: {}\n")
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))

        failed = wait_for_job(client, job.id, finished, what="the job to fail")
        assert failed.state is JobState.FAILED
        assert isinstance(failed.error, Internal)
        assert "cannot load its pipelines" in failed.error.message and "broken.yaml" in failed.error.message
        wait_until(lambda: jobs.stored_uploads() == [], what="the job's video to be removed")


def test_a_redis_outage_is_unavailable_with_a_retry_hint(tmp_path: Path, sample_clip: Path) -> None:
    """Clients are told to retry, not that the server has a bug."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        stored_before = jobs.stored_uploads()
        assert jobs.redis is not None
        jobs.redis.stop()
        with pytest.raises(Unavailable) as raised:
            client.get_job(job.id)
        assert raised.value.reason == "JOB_STORE_UNAVAILABLE"
        assert raised.value.retry_after is not None and raised.value.retry_after > 0
        # The kind of failure, not its text: that named the store's address to every caller.
        assert raised.value.message == "the job store cannot be reached (ConnectionError); retry shortly"
        with pytest.raises(Unavailable):
            client.submit_job(sample_clip, "paced")
        assert jobs.stored_uploads() == stored_before  # the refused upload was not kept
        # Refused before the upload, not after it: the whole video is not taken only to be refused.
        large = tmp_path / "large.mp4"
        large.write_bytes(os.urandom(64 * 1024 * 1024))
        sent: list[int] = []
        with pytest.raises(Unavailable) as refused:
            client.submit_job(large, "paced", on_upload_progress=lambda done, _total: sent.append(done))
        assert refused.value.reason == "JOB_STORE_UNAVAILABLE"
        assert max(sent, default=0) < 16 * 1024 * 1024, max(sent)


def test_while_redis_is_a_read_only_replica_watches_go_on_and_submissions_are_refused_before_the_upload(
    tmp_path: Path, sample_clip: Path
) -> None:
    """A failover's replica not yet promoted answers reads and refuses writes: a watch must not
    fail for its mark (kept from the other replicas' retention), and a submission is refused
    before the video arrives (a PING, which a replica answers, cannot tell)."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=5))
        wait_for_job(client, job.id, finished)
        assert jobs.redis is not None
        control = redis.Redis.from_url(jobs.redis.url)
        control.replicaof("127.0.0.1", free_port())  # nothing there: it stays a read-only replica
        try:
            frames, updates = watch_all(client, job.id)
            assert len(frames) == 5 and updates[-1].state is JobState.SUCCEEDED

            large = tmp_path / "large.mp4"
            large.write_bytes(os.urandom(64 * 1024 * 1024))
            sent: list[int] = []
            for key in (None, "read-only-1"):
                sent.clear()
                with pytest.raises(Unavailable) as refused:
                    client.submit_job(large, "paced", idempotency_key=key,
                                      on_upload_progress=lambda done, _total: sent.append(done))
                assert refused.value.reason == "JOB_STORE_UNAVAILABLE"
                assert max(sent, default=0) < 16 * 1024 * 1024, max(sent)
        finally:
            control.replicaof("NO", "ONE")
            control.close()


def _job_through_a_redis_restart(jobs: JobsDeployment, video: Path, down_seconds: float) -> tuple[VideodagClient, Job]:
    """A 100-frame job (about 3 s) with Redis saved, stopped for `down_seconds` and started again
    while it runs; checks that every frame is stored once and that the worker is still there."""
    client = jobs.start_server()
    job = client.submit_job(video, "paced", RunOptions(max_frames=100))
    wait_for_job(client, job.id, is_running_with_frames(5), what="the job under way")
    assert jobs.redis is not None
    jobs.redis.restart(down_seconds=down_seconds)

    done = wait_for_job(client, job.id, finished, timeout=90)
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.frames_done == 100, "each frame counted once"
    frames, _updates = watch_all(client, job.id)
    assert [frame.frame_index for frame in frames] == list(range(100))
    assert jobs.workers[0].process.poll() is None, "the worker outlived the outage"
    return client, done


def test_a_running_job_waits_out_a_redis_restart_and_stores_every_frame_once(
    tmp_path: Path, sample_clip: Path
) -> None:
    """A failover or restart of Redis takes seconds; a job hours long must not fail for it, and
    the RQ worker running it (whose heartbeats meet the outage) must not quit."""
    # A lease of 10 s: the job waits out up to 5 s, and no other worker may take it over.
    with deployment("redis", tmp_path, job_lease_seconds=10.0) as jobs:
        client, done = _job_through_a_redis_restart(jobs, sample_clip, down_seconds=2.0)
        assert done.attempt == 1, "not run again"
        after = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        assert wait_for_job(client, after.id, finished, timeout=60).state is JobState.SUCCEEDED


def test_a_redis_that_stops_answering_is_unavailable_in_seconds_not_a_hung_call(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Paused, Redis keeps its connections open: only the server's socket timeout ends the wait."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        wait_for_job(client, job.id, finished)
        assert jobs.redis is not None
        jobs.redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                client.get_job(job.id, timeout=120)
            waited = time.monotonic() - started
        finally:
            jobs.redis.resume()
        assert raised.value.reason == "JOB_STORE_UNAVAILABLE"
        assert waited < 60, "a socket timeout of seconds, with redis-py's retries"
        assert client.get_job(job.id).state is JobState.SUCCEEDED, "answered again once Redis is back"


def test_a_submission_whose_record_a_redis_stall_left_unconfirmed_says_the_job_may_exist_and_it_runs(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Redis stalled past the socket timeout as the job was recorded, and applied the record once
    the stall ended: the server had answered "retry shortly" as if nothing were made and deleted
    the video, and the job recorded after all FAILED when it ran, its video missing.

    Whether the record is applied depends on whether it was sent before the stall (on a new
    connection it waits for the connection's set-up, which the stall fails): a lease of 40 s
    makes maintenance, which could hold the server's idle connection, run every 10 s only. Not
    applied, the job does not exist, and its video is kept for maintenance to remove later."""
    data = sample_clip.read_bytes()
    with deployment("redis", tmp_path, job_lease_seconds=40.0) as jobs:
        client = jobs.start_server()
        assert jobs.redis is not None
        redis_server = jobs.redis

        def requests() -> Iterator[video_pipeline_service_pb2.SubmitJobRequest]:
            yield video_pipeline_service_pb2.SubmitJobRequest(config=video_pipeline_service_pb2.SubmitJobConfig(
                run_config=run_pb2.RunConfig(pipeline_id="paced", file_name=sample_clip.name,
                                             options=run_pb2.RunOptions(max_frames=5))))
            yield video_pipeline_service_pb2.SubmitJobRequest(chunk=data[:-100])
            time.sleep(1.0)  # the server has checked that Redis takes writes, and is receiving the video
            redis_server.pause()
            yield video_pipeline_service_pb2.SubmitJobRequest(chunk=data[-100:])

        try:
            with grpc.insecure_channel(f"127.0.0.1:{jobs.servers[0].port}") as channel:
                stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
                with pytest.raises(grpc.RpcError) as refused:
                    stub.SubmitJob(requests(), timeout=120)
        finally:
            redis_server.resume()

        error = from_grpc_error(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "JOB_STORE_UNAVAILABLE")
        job_id = error.metadata["job_id"]
        assert f"it may have been created all the same, as job {job_id}" in error.message
        assert "a retry without an idempotency key may create a second job" in error.message
        assert [Path(name).stem for name in jobs.stored_uploads()] == [job_id], "the video is kept"
        try:
            client.get_job(job_id)
        except NotFound:
            return
        # Recorded once Redis went on: handed to the workers by maintenance, as a job whose hand-over
        # did not follow its creation, it runs with its video.
        done = wait_for_job(client, job_id, finished, timeout=120, what="the job recorded after the stall")
        assert done.state is JobState.SUCCEEDED, done.error
        assert done.frames_done == 5


def test_a_server_whose_redis_is_out_of_reach_says_so_and_does_not_start(tmp_path: Path) -> None:
    unused = free_port()
    started = subprocess.run(
        [*SERVER_SCRIPT, "--port", "0", "--temp-dir", str(tmp_path / "tmp"), "--data-dir", str(tmp_path / "data"),
         "--job-backend", "redis", "--redis-url", f"redis://127.0.0.1:{unused}/0"],
        capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 1
    said = why_it_ended(started.stderr)
    assert said.startswith("cannot start: the job store (Redis) cannot be used: ConnectionError: ")
    assert "Traceback" not in started.stderr


def test_an_outage_longer_than_a_job_waits_runs_the_job_again_and_keeps_the_worker(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Past half its lease the run stops; the job runs again once Redis is back, as after a crash."""
    with deployment("redis", tmp_path, job_lease_seconds=10.0) as jobs:  # the run waits up to 5 s
        _client, done = _job_through_a_redis_restart(jobs, sample_clip, down_seconds=8.0)
        assert done.attempt == 2, "run again from the start"


def _redis_restarted_at_the_claim(jobs: JobsDeployment, video: Path, down_seconds: float) -> Job:
    """A job submitted, and Redis stopped for `down_seconds` while its work horse loads the
    pipelines, so the horse's claim of the job meets the outage; the job at its end."""
    slow_start = SlowStart(jobs.site_dir, seconds=1.0)
    client = jobs.start_server()
    job = client.submit_job(video, "paced", RunOptions(max_frames=10))
    slow_start.wait_until_loading()
    assert jobs.redis is not None
    jobs.redis.restart(down_seconds=down_seconds)
    slow_start.seconds = 0.0
    return wait_for_job(client, job.id, finished, timeout=150, what="the job to run")


def test_a_claim_waits_out_a_redis_restart_and_the_job_runs(tmp_path: Path, sample_clip: Path) -> None:
    """The claim was not tried again: the worker's task failed, and the job stayed QUEUED for
    good, with no lease for recovery to find (its watches waited forever)."""
    with deployment("redis", tmp_path, job_lease_seconds=10.0) as jobs:  # a claim waits up to 5 s
        done = _redis_restarted_at_the_claim(jobs, sample_clip, down_seconds=2.0)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1, done.error


def test_a_job_whose_claim_outlasts_the_wait_for_redis_runs_once_redis_is_back(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Past the wait the horse's task fails with the job unclaimed: recovery hands it over again,
    once RQ no longer holds the task, as a run that vanished."""
    with deployment("redis", tmp_path) as jobs:  # a lease of 3 s: a claim waits up to 1.5 s
        done = _redis_restarted_at_the_claim(jobs, sample_clip, down_seconds=5.0)
        assert done.state is JobState.SUCCEEDED and done.attempt == 2, done.error
        wait_until(lambda: jobs.stored_uploads() == [], timeout=10, what="the finished job's video to be deleted")


# What a worker logs each time its wait for the next job meets a Redis failing over.
_FAILING_OVER = "Redis is failing over"


@contextlib.contextmanager
def _primary_demoted_while_the_worker_waits(jobs: JobsDeployment) -> Iterator[RqWorker]:
    """The deployment's Redis made a read-only replica, as a failover's old primary, while its one
    worker is blocked waiting for its next job; promoted again after."""
    (worker,) = jobs.workers
    assert jobs.redis is not None
    control = redis.Redis.from_url(jobs.redis.url)
    wait_until(lambda: any("b" in each["flags"] for each in control.client_list()),  # blocked in a pop
               what="the worker waiting for its next job")
    try:
        control.replicaof("127.0.0.1", free_port())
        yield worker
    finally:
        control.replicaof("NO", "ONE")
        control.close()


def test_an_idle_worker_outlives_a_failover_and_runs_the_next_job(tmp_path: Path, sample_clip: Path) -> None:
    """A failover ends an idle worker's blocking wait for the next job ("UNBLOCKED ... master ->
    replica"), which RQ's loop retries only for lost connections: left to RQ, the worker would
    exit, and the queue have no one left to run its jobs."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        first = client.submit_job(sample_clip, "paced", RunOptions(max_frames=2))
        assert wait_for_job(client, first.id, finished).state is JobState.SUCCEEDED
        with _primary_demoted_while_the_worker_waits(jobs) as worker:
            # Its wait is ended (UNBLOCKED), then a retry meets the read-only replica (READONLY).
            wait_until(lambda: worker.log_count(_FAILING_OVER) >= 2 or worker.process.poll() is not None,
                       what="the worker's wait ended and retried on the replica")
            assert worker.process.poll() is None, "the worker exited"
        second = client.submit_job(sample_clip, "paced", RunOptions(max_frames=2))
        done = wait_for_job(client, second.id, finished, timeout=60)
        assert done.state is JobState.SUCCEEDED, done.error
        assert worker.process.poll() is None


# Holds an RQ worker process as it is about to record the start of a task it took from the queue.
_START_OF_A_TASK_HELD = """
import os
import time

import rq.worker.base

_prepare_execution = rq.worker.base.BaseWorker.prepare_execution


def _held(self, job):
    open(os.environ["VIDEODAG_TEST_TASK_TAKEN"], "w").close()
    while not os.path.exists(os.environ["VIDEODAG_TEST_TASK_GO"]):
        time.sleep(0.01)
    return _prepare_execution(self, job)


rq.worker.base.BaseWorker.prepare_execution = _held
"""


def test_a_worker_that_meets_an_outage_as_it_starts_a_task_waits_it_out_and_runs_the_job(
    tmp_path: Path, sample_clip: Path
) -> None:
    """RQ's worker quit on it, the task left in RQ's intermediate list: the job stayed QUEUED
    until RQ's own cleanup, ten minutes or more later, and a worker fewer ran the queue."""
    with deployment("redis", tmp_path) as jobs:
        assert jobs.redis is not None
        jobs.workers.pop().stop()
        held = tmp_path / "held"
        held.mkdir()
        (held / "sitecustomize.py").write_text(_START_OF_A_TASK_HELD)
        taken, go = tmp_path / "taken", tmp_path / "go"
        environment = {**jobs.environment, "VIDEODAG_TEST_TASK_TAKEN": str(taken), "VIDEODAG_TEST_TASK_GO": str(go),
                       "PYTHONPATH": f"{held}:{jobs.environment['PYTHONPATH']}"}
        worker = RqWorker(jobs.redis.url, environment, tmp_path / "held.log", tmp_path / "held-tmp")
        jobs.workers.append(worker)
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=3))
        wait_until(taken.exists, what="the worker to take the task")
        released = threading.Timer(1.0, go.touch)  # while Redis is down
        released.start()
        jobs.redis.restart(down_seconds=3.0)
        released.join()
        done = wait_for_job(client, job.id, finished, timeout=60, what="the job to run once Redis is back")
        assert (done.state, done.attempt, done.frames_done) == (JobState.SUCCEEDED, 1, 3), done.error
        assert worker.process.poll() is None, "the worker is still there"
        assert worker.log_count(f"as it starts task videodag-{job.id}-1; trying again in") >= 1


def test_an_rq_worker_command_that_starts_while_redis_is_silent_exits_1_for_its_supervisor_to_restart(
    tmp_path: Path,
) -> None:
    """As the README says of `rq worker` still starting: RQ's command line reads Redis before the
    worker exists, outside its outage handling, and gives up after redis-py's 5 s."""
    with deployment("redis", tmp_path) as jobs:
        assert jobs.redis is not None
        started = jobs.workers[0]
        started.wait_until_listening()
        jobs.redis.pause()
        try:
            starting = jobs.start_worker(rq_command_line=True)
            starting.process.wait(60)
        finally:
            jobs.redis.resume()
        assert starting.process.returncode == 1
        assert "TimeoutError: Timeout reading from 127.0.0.1:" in starting.log_path.read_text()
        assert started.process.poll() is None, "the worker that had started outlives the outage"


def test_a_worker_stopped_during_a_failover_exits_cleanly(tmp_path: Path) -> None:
    """Its record of its exit cannot be written to the read-only replica: that must not make it
    exit 1 with a traceback, a failure to its supervisor."""
    with deployment("redis", tmp_path) as jobs, _primary_demoted_while_the_worker_waits(jobs) as worker:
        wait_until(lambda: worker.log_count(_FAILING_OVER) >= 1, what="the worker's wait ended by the failover")
        worker.stop()
        assert worker.process.returncode == 0
