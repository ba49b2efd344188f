"""A job whose decoder the system kills mid-run (as the out-of-memory killer does) runs again in
its next attempt and succeeds, end to end, against both backends: its watcher gets every frame
once, and nobody submits it again. The decoder is found as the process that has the job's
stored video open, and killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import JobsDeployment, deployment, finished, is_running_with_frames, wait_for_job, watch_all

from videodag_client import FrameResult, Job, JobState, VideodagClient

SAMPLE_FRAMES = 120


@pytest.fixture(params=["embedded", "redis"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobsDeployment]:
    with deployment(request.param, tmp_path) as deployed:
        yield deployed


def processes_reading(folder: Path) -> list[int]:
    """The processes (but this one) with a file of `folder` open."""
    found = []
    for fd_folder in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_folder.parent.name)
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd).startswith(f"{folder}/") for fd in fd_folder.iterdir()):
                found.append(pid)
    return found


def test_a_job_whose_decoder_was_killed_runs_again_and_its_watcher_gets_every_frame_once(
    jobs: JobsDeployment, sample_clip: Path
) -> None:
    client: VideodagClient = jobs.start_server()
    job = client.submit_job(sample_clip, "paced")
    watched: list[tuple[list[FrameResult], list[Job]]] = []
    watcher = threading.Thread(target=lambda: watched.append(watch_all(client, job.id)))
    watcher.start()
    wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run")

    uploads = (jobs.settings.data_dir / "uploads").resolve()
    [decoder] = processes_reading(uploads)
    os.kill(decoder, signal.SIGKILL)

    # Within the pause and a maintenance pass or a worker's hand-over: the servers' own hand-over
    # of a job queued again waits for their dispatch grace (30 s).
    done = wait_for_job(client, job.id, finished, timeout=25, what="the job to end")
    watcher.join(30)

    assert (done.state, done.attempt, done.error) == (JobState.SUCCEEDED, 2, None)
    assert done.frames_done == SAMPLE_FRAMES
    [(frames, updates)] = watched
    assert [frame.frame_index for frame in frames] == list(range(SAMPLE_FRAMES)), "each frame once, in order"
    assert [(update.state, update.attempt) for update in updates if update.state is JobState.QUEUED][-1] == (
        JobState.QUEUED, 2), "the watcher saw the job queued again"
    assert updates[-1].state is JobState.SUCCEEDED
    assert jobs.stored_uploads() == [], "its video goes with its last attempt"
    if jobs.workers:
        [worker] = jobs.workers
        assert worker.log_count("runs again from the start as attempt 2") == 1
        assert worker.log_count(f"job {job.id} handed to the workers again (attempt 2)") == 1


def queued_again_by_a_killed_decoder(jobs: JobsDeployment, client: VideodagClient, clip: Path) -> str:
    """A job whose decoder was killed mid-run: the id of the job, once queued again in attempt 2
    (its worker's horse then pauses before handing it over)."""
    job = client.submit_job(clip, "paced")
    wait_for_job(client, job.id, is_running_with_frames(5), what="the job to run")
    [decoder] = processes_reading((jobs.settings.data_dir / "uploads").resolve())
    os.kill(decoder, signal.SIGKILL)
    wait_for_job(client, job.id, lambda seen: (seen.state, seen.attempt) == (JobState.QUEUED, 2), timeout=10,
                 what="the job to be queued again")
    return job.id


def test_a_worker_hands_a_job_queued_again_over_once_its_pause_ends(tmp_path: Path, sample_clip: Path) -> None:
    """Not told to stop, the work horse hands the job over after the whole pause, not before."""
    pause = 4.0
    with deployment("redis", tmp_path, run_again_pause=pause) as jobs:
        client = jobs.start_server()
        [worker] = jobs.workers
        job_id = queued_again_by_a_killed_decoder(jobs, client, sample_clip)
        queued = time.monotonic()
        wait_for_job(client, job_id, lambda seen: seen.state is not JobState.QUEUED, what="the job to run again")
        waited = time.monotonic() - queued
        done = wait_for_job(client, job_id, finished, what="the job to end")

        assert waited > pause - 0.5, f"run again {waited:.1f} s after it was queued again, within the pause"
        assert (done.state, done.attempt, done.frames_done) == (JobState.SUCCEEDED, 2, SAMPLE_FRAMES)
        assert worker.log_count(f"job {job_id} handed to the workers again (attempt 2)") == 1
        assert worker.log_count("without the rest of its pause") == 0


def test_a_worker_told_to_stop_while_its_horse_pauses_exits_at_once_and_the_job_runs_on_another(
    tmp_path: Path, sample_clip: Path
) -> None:
    """A worker told to stop waits for its work horse, which paused before handing a job queued
    again over: the worker exited only after the pause (up to 23 s), past a supervisor's stop
    timeout (Docker's 10 s), and was killed. The horse now hands the job over as its worker
    stops, and the next worker runs it, well before the servers' maintenance would hand it
    over (30 s after it was queued again)."""
    with deployment("redis", tmp_path, run_again_pause=60.0) as jobs:
        client = jobs.start_server()
        [stopped] = jobs.workers
        job_id = queued_again_by_a_killed_decoder(jobs, client, sample_clip)
        told = time.monotonic()
        os.killpg(stopped.process.pid, signal.SIGTERM)  # the worker only: RQ's horse has a group of its own
        try:
            stopped.process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker told to stop waited for its horse's pause")
        exited_after = time.monotonic() - told

        assert exited_after < 5.0, f"the worker exited {exited_after:.1f} s after it was told to stop"
        assert stopped.process.returncode == 0
        assert stopped.log_count(f"job {job_id}: this worker is stopping; the job is handed over without") == 1
        assert stopped.log_count(f"job {job_id} handed to the workers again (attempt 2)") == 1

        jobs.start_worker()
        done = wait_for_job(client, job_id, finished, timeout=30, what="the job to end")
        assert time.monotonic() - told < 30, "run again only once the servers' maintenance handed it over"
        assert (done.state, done.attempt, done.error) == (JobState.SUCCEEDED, 2, None)
        assert done.frames_done == SAMPLE_FRAMES
        assert jobs.stored_uploads() == [], "its video goes with its last attempt"
