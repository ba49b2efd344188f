"""Restarts: a server or worker killed mid-job, started again; every job completes, every frame
result is stored (and delivered to a watcher) exactly once.

Documented behaviour under test: QUEUED jobs run after the restart; a RUNNING job is run
again from the start in a new attempt, its partial results discarded first.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from jobs_harness import (
    JobsDeployment,
    ServerProcess,
    SlowStart,
    child_pids,
    deployment,
    finished,
    is_running_with_frames,
    wait_for_job,
    wait_until,
    watch_all,
)

from videodag_client import FrameResult, JobState, RunOptions, VideodagClient

FRAMES = 60


def _server_arguments(jobs: JobsDeployment, port: int) -> list[str]:
    return [
        "--port", str(port),
        "--data-dir", str(jobs.settings.data_dir),
        "--temp-dir", str(jobs.settings.temp_dir),
        "--pipeline-dir", str(jobs.pipeline_dir),
        "--job-workers", "1",
        "--log-level", "WARNING",
    ]


def test_embedded_server_killed_mid_job_reruns_it_and_runs_the_queued_one(tmp_path: Path, sample_clip: Path) -> None:
    with deployment("embedded", tmp_path) as jobs:
        first_server = ServerProcess(_server_arguments(jobs, 0), jobs.environment, tmp_path / "server1.log")
        port = first_server.port
        client = VideodagClient(f"127.0.0.1:{port}")
        try:
            running = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
            queued = client.submit_job(sample_clip, "frame_stats_v1", RunOptions(max_frames=10))
            seen: list[int] = []
            watch = client.watch_job(running.id, reconnect_window=30)
            for event in watch:
                if isinstance(event, FrameResult):
                    seen.append(event.frame_index)
                    if len(seen) == 5:
                        break
            assert client.get_job(queued.id).state is JobState.QUEUED

            first_server.kill()
            second_server = ServerProcess(_server_arguments(jobs, port), jobs.environment, tmp_path / "server2.log")
            try:
                # The same watch resumes on the restarted server after the last frame it delivered.
                for event in watch:
                    if isinstance(event, FrameResult):
                        seen.append(event.frame_index)
                rerun = client.get_job(running.id)
                queued_job = wait_for_job(client, queued.id, finished)
                replayed, _ = watch_all(client, running.id)
            finally:
                second_server.kill()
        finally:
            client.close()

    assert watch.reconnects >= 1
    assert seen == list(range(FRAMES)), "the watcher saw every frame once across the restart"
    assert rerun.state is JobState.SUCCEEDED and rerun.attempt == 2
    assert rerun.frames_done == FRAMES
    assert [frame.frame_index for frame in replayed] == list(range(FRAMES)), "stored once each"
    assert [frame.result["seen"] for frame in replayed] == [float(i + 1) for i in range(FRAMES)], (
        "every result comes from a run that started at frame 0, not one resumed mid-video"
    )
    assert queued_job.state is JobState.SUCCEEDED and queued_job.attempt == 1


def test_rq_worker_killed_mid_job_is_replaced_and_the_job_completes(tmp_path: Path, sample_clip: Path) -> None:
    # A short lease: the lost worker's job is noticed 1.5 s after its last sign of life.
    with deployment("redis", tmp_path, workers=1, job_lease_seconds=1.5) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run on the worker")

        jobs.workers[0].kill()
        jobs.start_worker()

        final = wait_for_job(client, job.id, finished, timeout=60, what="the job to complete on the new worker")
        frames, _ = watch_all(client, job.id)

    assert final.state is JobState.SUCCEEDED and final.attempt == 2
    assert final.frames_done == FRAMES
    assert [frame.frame_index for frame in frames] == list(range(FRAMES))
    assert [frame.result["seen"] for frame in frames] == [float(i + 1) for i in range(FRAMES)]


def test_a_job_cancelled_after_its_rq_worker_died_loses_its_video_once_the_lease_ends(
    tmp_path: Path, sample_clip: Path
) -> None:
    """A run that stops deletes its video; a cancelled job whose worker vanished first has none
    to do it, so recovery does, once the lease says the run is gone."""
    with deployment("redis", tmp_path, workers=1, job_lease_seconds=1.5) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run on the worker")

        jobs.workers[0].kill()
        assert client.cancel_job(job.id).state is JobState.CANCELLED
        assert jobs.stored_uploads() != [], "no run was left to delete it at the cancel"

        wait_until(lambda: jobs.stored_uploads() == [], timeout=15, what="the video to go once the lease ended")
        final = client.get_job(job.id)

    assert final.state is JobState.CANCELLED and final.attempt == 1, "cancelled, never run again"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, which may take a moment)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_a_work_horse_dies_with_its_rq_worker_and_its_job_runs_again(tmp_path: Path, sample_clip: Path) -> None:
    """Left running, the horse would finish its job unsupervised: past RQ's job timeout, and
    writing the dead worker's record back into Redis with no expiry."""
    with deployment("redis", tmp_path, workers=1, job_lease_seconds=1.5) as jobs:
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run on the worker")
        worker = jobs.workers[0]
        horses = child_pids(worker.process.pid)
        assert horses, "RQ runs the job in a work horse"

        os.kill(worker.process.pid, signal.SIGKILL)  # the worker alone: its horse has a session of its own
        worker.process.wait(10)

        wait_until(lambda: not any(_running(pid) for pid in horses), timeout=10, what="the work horse to end")
        jobs.start_worker()
        final = wait_for_job(client, job.id, finished, timeout=60, what="the job to complete on the new worker")

    assert final.state is JobState.SUCCEEDED and final.attempt == 2
    assert final.frames_done == FRAMES


def test_a_job_whose_rq_worker_was_killed_before_it_claimed_the_job_runs_on_another(
    tmp_path: Path, sample_clip: Path
) -> None:
    """Its work horse loads the pipelines before it claims the job: killed then, the worker left
    the job QUEUED with no lease, out of RQ's queue, and recovery never looked at it again. RQ
    keeps the task STARTED until its heartbeat's time runs out (61 s with the workers' monitoring
    interval of 1 s): then the job is handed over again, as a run that vanished."""
    with deployment("redis", tmp_path, workers=1) as jobs:
        slow_start = SlowStart(jobs.site_dir, seconds=5.0)
        client = jobs.start_server()
        job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=10))
        slow_start.wait_until_loading()

        jobs.workers[0].kill()
        assert client.get_job(job.id).state is JobState.QUEUED, "killed before its claim"
        slow_start.seconds = 0.0
        jobs.start_worker()

        final = wait_for_job(client, job.id, finished, timeout=150, what="the job to run on the new worker")
        frames, _ = watch_all(client, job.id)
        wait_until(lambda: jobs.stored_uploads() == [], timeout=10, what="the finished job's video to be deleted")

    assert final.state is JobState.SUCCEEDED and final.attempt == 2, final.error
    assert [frame.frame_index for frame in frames] == list(range(10))
