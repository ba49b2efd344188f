"""Replicas and RQ workers whose wall clocks disagree (hosts minutes apart, an NTP step), with
real processes: a worker's lease, written by one clock and judged by another, must hold.

The worker runs with its Python wall clock (`time.time`) shifted by a `sitecustomize` module,
as a host whose clock is off would have it; Redis and the replica keep the real one.
"""

from __future__ import annotations

from pathlib import Path

from jobs_harness import JobsDeployment, RqWorker, deployment, finished, is_running_with_frames, wait_for_job

from videodag_client import JobState, RunOptions

FRAMES = 60  # about 2 s of a paced job: many of the replica's maintenance passes

_SHIFTED_WALL_CLOCK = """
import os
import time

_OFFSET = float(os.environ["VIDEODAG_TEST_WALL_CLOCK_OFFSET"])
_WALL_CLOCK = time.time
time.time = lambda: _WALL_CLOCK() + _OFFSET
"""


def _worker_with_its_clock_off(jobs: JobsDeployment, tmp_path: Path, offset_seconds: float) -> RqWorker:
    """The deployment's one worker replaced by one whose wall clock is `offset_seconds` off."""
    jobs.workers.pop().stop()
    shifted = tmp_path / "shifted"
    shifted.mkdir(exist_ok=True)
    (shifted / "sitecustomize.py").write_text(_SHIFTED_WALL_CLOCK)
    environment = {**jobs.environment, "VIDEODAG_TEST_WALL_CLOCK_OFFSET": repr(offset_seconds),
                   "PYTHONPATH": f"{shifted}:{jobs.environment['PYTHONPATH']}"}
    assert jobs.redis is not None
    worker = RqWorker(jobs.redis.url, environment, tmp_path / "off.log", tmp_path / "off-tmp")
    jobs.workers.append(worker)
    return worker


def test_a_worker_whose_clock_is_minutes_behind_runs_its_job_once(tmp_path: Path, sample_clip: Path) -> None:
    """Its leases had ended by the replica's clock as it wrote them: every pass of the replica's
    maintenance took the job for abandoned, and it ran three times, then FAILED "the job's run
    vanished 3 times (the server or worker running it crashed or was killed)"."""
    with deployment("redis", tmp_path) as jobs:
        _worker_with_its_clock_off(jobs, tmp_path, -120.0)
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        done = wait_for_job(client, job.id, finished, timeout=60, what="the job to run")
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.attempt == 1, "run once"
    assert done.frames_done == FRAMES
    assert done.started_at is not None and done.ended_at is not None
    assert done.created_at <= done.started_at <= done.ended_at, "one clock for the job's times"


def test_the_job_of_a_worker_whose_clock_was_minutes_ahead_runs_again_one_lease_after_it_died(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Its leases ended minutes after the lease time by the replica's clock: the job of such a
    worker killed mid-run stayed RUNNING, with nobody running it, that much longer."""
    with deployment("redis", tmp_path) as jobs:
        ahead = _worker_with_its_clock_off(jobs, tmp_path, 120.0)
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run on the worker ahead")
        ahead.kill()
        jobs.start_worker()
        done = wait_for_job(client, job.id, finished, timeout=30, what="the job to run again (a lease is 3 s)")
    assert done.state is JobState.SUCCEEDED and done.attempt == 2, done.error
