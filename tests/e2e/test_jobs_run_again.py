"""A job whose decoder the system kills mid-run (as the out-of-memory killer does) runs again in
its next attempt and succeeds, end to end, against both backends: its watcher gets every frame
once, and nobody submits it again. The decoder is found as the process that has the job's
stored video open, and killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
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
