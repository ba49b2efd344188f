"""The embedded queue while the server drains (no new job starts, the running ones can be waited for),
and recovery at start."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from fakes.waiting import wait_until
from videodag_service.dag import DagPipelineService
from videodag_service.errors import JobNotFound
from videodag_service.jobs import (
    DirectoryUploadStorage,
    Job,
    JobService,
    JobState,
    JobSummary,
    SqliteJobStore,
    StoredVideo,
)
from videodag_service.jobs.dispatch import ThreadPoolJobQueue
from videodag_service.jobs.execution import JobInterrupted
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.video import SamplingOptions


class _GatedExecutor:
    """Stands in for `JobExecutor`: each job runs until the test opens its gate, or the queue stops."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = threading.Event()

    def execute(self, job_id: str, attempt: int, should_stop: Callable[[], bool]) -> JobState | None:
        self.started.append(job_id)
        while not self.gate.wait(0.01):
            if should_stop():
                raise JobInterrupted(job_id)
        return JobState.SUCCEEDED

    def record_pending_ends(self) -> None:
        return None


def _job() -> Job:
    job_id = new_job_id()
    return Job(job_id, JobState.QUEUED, "p", SamplingOptions(), StoredVideo(f"{job_id}.mp4", 1, "0" * 64), 0.0)


def _queue(executor: _GatedExecutor) -> ThreadPoolJobQueue:
    return ThreadPoolJobQueue(executor, 1)  # type: ignore[arg-type]  # only `execute` is used


def test_a_draining_queue_starts_nothing_new_and_lets_the_running_job_finish() -> None:
    executor = _GatedExecutor()
    queue = _queue(executor)
    try:
        running, waiting = _job(), _job()
        queue.dispatch(running)
        queue.dispatch(waiting)
        assert wait_until(lambda: executor.started == [running.id])

        queue.stop_taking()
        assert not queue.wait_until_idle(0.1), "the running job is waited for"
        executor.gate.set()
        assert queue.wait_until_idle(5)
        assert wait_until(lambda: queue.depth() == 0)
        assert executor.started == [running.id], "the queued job stays QUEUED for the next start"
    finally:
        queue.close()


def test_an_idle_queue_is_idle_at_once() -> None:
    queue = _queue(_GatedExecutor())
    try:
        assert queue.wait_until_idle(0)
    finally:
        queue.close()


def test_closing_interrupts_the_running_job() -> None:
    executor = _GatedExecutor()
    queue = _queue(executor)
    job = _job()
    queue.dispatch(job)
    assert wait_until(lambda: executor.started == [job.id])
    queue.close(timeout=5)
    assert queue.wait_until_idle(0), "the worker left its job when told to stop"


class _UndeletableUploads(DirectoryUploadStorage):
    """Videos a passing permission problem keeps on disk."""

    def delete(self, ref: str) -> None:
        raise PermissionError(13, "Permission denied", ref)


def test_a_video_that_cannot_be_deleted_does_not_stop_recovery(tmp_path: Path) -> None:
    """A job given up at start has its video deleted; failing that must not fail the server's start."""
    data = tmp_path / "data"
    store = SqliteJobStore(data)
    given_up, queued = _job(), _job()
    for job in (given_up, queued):
        store.create(job)
    store.claim(given_up.id, 1, 0.0)
    store.close()  # the process ends with it RUNNING, its last attempt: a crash, three times over
    store = SqliteJobStore(data)
    executor = _GatedExecutor()
    queue = _queue(executor)
    service = JobService(store, queue, _UndeletableUploads(data / "uploads"), DagPipelineService({}),  # type: ignore[arg-type]
                         max_upload_bytes=1, retention_seconds=60, max_attempts=1)
    try:
        service.run_maintenance()
        assert store.get(given_up.id).state is JobState.FAILED
        assert wait_until(lambda: executor.started == [queued.id]), "the rest of recovery went on"
    finally:
        executor.gate.set()
        queue.close()
        store.close()


def test_retention_waits_for_the_watches_of_a_job_so_each_gets_its_final_state(tmp_path: Path) -> None:
    """With a retention of 0 the job could go between the watch's last frame and its final read:
    the watch would end NOT_FOUND, and its caller never learn how the job ended."""
    data = tmp_path / "data"
    store = SqliteJobStore(data)
    queue = _queue(_GatedExecutor())
    service = JobService(store, queue, DirectoryUploadStorage(data / "uploads"), DagPipelineService({}),
                         max_upload_bytes=1, retention_seconds=0)
    try:
        job = store.create(_job())
        store.claim(job.id, 1, 0.0)
        watch = service.watch(job.id)
        assert next(watch).state is JobState.RUNNING
        store.finish(RunClaim(job.id, 1, 0.0), 1.0, 1.0, summary=JobSummary("p", "1", 0, 0, 0.1, 0.1))
        service.run_maintenance()  # the job's retention has ended, but it is being watched
        assert [event.state for event in watch] == [JobState.SUCCEEDED]  # type: ignore[union-attr]
        service.run_maintenance()  # its watch is over: now it goes
        with pytest.raises(JobNotFound):
            store.get(job.id)
    finally:
        queue.close()
        store.close()


class _MarkRecordingStore(SqliteJobStore):
    """Records how long each watch mark lasts (a store only one server uses keeps none)."""

    def __init__(self, data_dir: Path, clock: Callable[[], float]) -> None:
        super().__init__(data_dir)
        self._clock = clock
        self.marks_last: list[float] = []

    def mark_watched(self, job_ids: Collection[str], until: float) -> None:
        if job_ids:
            self.marks_last.append(until - self._clock())


@pytest.mark.parametrize("interval", [0.05, 10.0, 30.0, 120.0])
def test_a_watch_mark_outlasts_the_maintenance_that_renews_it(tmp_path: Path, interval: float) -> None:
    """A mark that lasts no longer than the interval lapses for as long as each pass takes before
    renewing it (longer, for a pass an outage fails), and another replica's retention can then
    remove the job being watched."""
    now = 1000.0
    store = _MarkRecordingStore(tmp_path / "data", lambda: now)
    queue = _queue(_GatedExecutor())
    service = JobService(store, queue, DirectoryUploadStorage(tmp_path / "data" / "uploads"), DagPipelineService({}),
                         max_upload_bytes=1, retention_seconds=0, maintenance_interval_seconds=interval,
                         clock=lambda: now)
    try:
        job = store.create(_job())
        watch = service.watch(job.id)
        assert next(watch).state is JobState.QUEUED
        service.run_maintenance()
        assert len(store.marks_last) == 2, "marked as the watch starts, renewed by the pass"
        assert min(store.marks_last) >= 2 * interval, "a pass late by up to an interval finds the mark still there"
    finally:
        queue.close()
        store.close()


def test_a_retention_pass_says_what_it_removed_in_one_line_and_goes_on_past_a_video_it_cannot_delete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line per job buried the log (100,000 lines for 100,000 jobs), and the first video that
    could not be deleted ended the pass, leaving the other purged jobs' videos behind."""
    data = tmp_path / "data"
    store = SqliteJobStore(data)
    queue = _queue(_GatedExecutor())
    service = JobService(store, queue, _UndeletableUploads(data / "uploads"), DagPipelineService({}),  # type: ignore[arg-type]
                         max_upload_bytes=1, retention_seconds=0)
    try:
        jobs = [store.create(_job()) for _ in range(12)]
        for job in jobs:
            store.cancel(job.id, 0.0, 0.0)
        with caplog.at_level("INFO", logger="videodag_service.jobs.service"):
            service.run_maintenance()
        for job in jobs:
            with pytest.raises(JobNotFound):
                store.get(job.id)
        removed_lines = [record.getMessage() for record in caplog.records
                         if record.levelname == "INFO" and "retention ended" in record.getMessage()]
        assert len(removed_lines) == 1
        assert removed_lines[0].startswith("12 jobs removed") and removed_lines[0].endswith("and 2 more")
        warnings = [record for record in caplog.records if record.levelname == "WARNING"]
        assert len(warnings) == 12 and all("could not delete its video" in w.getMessage() for w in warnings)
    finally:
        queue.close()
        store.close()
