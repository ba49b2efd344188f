"""The embedded backend's parts with real files: upload storage, SQLite limits, the executor, the service."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import counter_pipeline, dag_with_test_pipelines
from fakes.media import write_indexed_video
from fakes.waiting import wait_until
from videodag_service.dag import DagPipelineService
from videodag_service.errors import (
    DeadlineExceeded,
    DiskFull,
    EmptyUpload,
    InvalidOptions,
    PipelineNotFound,
    UploadCorrupted,
    UploadTooLarge,
)
from videodag_service.jobs import (
    DataDirectoryInUse,
    DirectoryUploadStorage,
    Job,
    JobConfig,
    JobExecutor,
    JobFrame,
    JobRequest,
    JobService,
    JobState,
    SqliteJobStore,
    StoredVideo,
    open_job_service,
    sqlite_results_room,
)
from videodag_service.jobs.dispatch import ThreadPoolJobQueue
from videodag_service.jobs.execution import JobInterrupted
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.video import SamplingOptions, VideoFilePipelineService

PIPELINES = {
    "paced.yaml": counter_pipeline("paced", delay_seconds=0.02),
    # 3 s of work: a 1 s time limit ends it with room on both sides, however loaded the machine.
    "crawling.yaml": counter_pipeline("crawling", delay_seconds=0.1),
    "heavy.yaml": counter_pipeline("heavy", delay_seconds=4.0),  # a large model's call, far longer than a loaded poll
}


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> DagPipelineService:
    return dag_with_test_pipelines(tmp_path_factory.mktemp("pipelines"), PIPELINES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("media") / "clip.avi", 30, fps=25.0)


def chunks_of(path: Path, size: int = 4096) -> Iterator[bytes]:
    data = path.read_bytes()
    return (data[i:i + size] for i in range(0, len(data), size))


def test_upload_storage_keeps_checked_videos_and_nothing_else(tmp_path: Path, clip: Path) -> None:
    storage = DirectoryUploadStorage(tmp_path / "uploads")
    digest = hashlib.sha256(clip.read_bytes()).hexdigest()

    stored = storage.store(lambda: "a" * 24, chunks_of(clip), max_upload_bytes=10**6, declared_size=clip.stat().st_size,
                           declared_sha256=digest, file_name="x.AVI")

    assert (stored.ref, stored.sha256) == ("a" * 24 + ".avi", digest)
    assert storage.path(stored.ref).read_bytes() == clip.read_bytes()
    failures = [
        (UploadCorrupted, {"declared_sha256": "0" * 64}),
        (UploadTooLarge, {"max_upload_bytes": 100}),
        (UploadCorrupted, {"declared_size": 5}),
    ]
    for expected, override in failures:
        options = {"max_upload_bytes": 10**6, "declared_size": None, "declared_sha256": None, **override}
        with pytest.raises(expected):
            storage.store(lambda: "b" * 24, chunks_of(clip), file_name="x.avi", **options)  # type: ignore[arg-type]
    with pytest.raises(EmptyUpload):
        storage.store(lambda: "c" * 24, iter([b""]), max_upload_bytes=10, declared_size=None, declared_sha256=None,
                      file_name="")
    assert sorted(storage.refs()) == [stored.ref]
    assert list((tmp_path / "uploads" / "incoming").iterdir()) == []
    storage.delete(stored.ref)
    storage.delete(stored.ref)
    with pytest.raises(ValueError):
        storage.path("../jobs.sqlite3")


def test_an_upload_that_would_fill_the_disk_is_refused(tmp_path: Path, clip: Path) -> None:
    storage = DirectoryUploadStorage(tmp_path, min_free_bytes=1 << 62)
    with pytest.raises(DiskFull) as refused:
        storage.store(lambda: "d" * 24, chunks_of(clip), max_upload_bytes=10**6, declared_size=None,
                      declared_sha256=None, file_name="x.avi")
    assert refused.value.status_code == "RESOURCE_EXHAUSTED"
    assert list(storage.refs()) == []


def test_an_upload_declared_over_the_limit_is_too_large_whatever_the_free_space(tmp_path: Path, clip: Path) -> None:
    """Over the limit is what the client must hear, not that the disk is full for a size it may not send."""
    storage = DirectoryUploadStorage(tmp_path, min_free_bytes=1 << 30)
    declared = shutil.disk_usage(tmp_path).free * 10
    with pytest.raises(UploadTooLarge) as refused:
        storage.store(lambda: "d" * 24, chunks_of(clip), max_upload_bytes=10**6, declared_size=declared,
                      declared_sha256=None, file_name="x.avi")
    assert refused.value.details.metadata["declared_size_bytes"] == str(declared)
    with pytest.raises(DiskFull) as full:  # within the limit, but more than the disk holds
        DirectoryUploadStorage(tmp_path, min_free_bytes=1 << 30).store(
            lambda: "e" * 24, chunks_of(clip), max_upload_bytes=declared, declared_size=declared,
            declared_sha256=None, file_name="x.avi")
    assert f"for the upload of {declared} bytes" in full.value.message
    assert list(storage.refs()) == []


def test_one_process_owns_a_data_directory(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    try:
        with pytest.raises(DataDirectoryInUse):
            SqliteJobStore(tmp_path)
        assert store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()
    SqliteJobStore(tmp_path).close()


def test_a_full_database_is_resource_exhausted_and_stays_consistent(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    job = store.create(_job(tmp_path))
    store.claim(job.id, 1, 0.0)
    # Cap the database file at its current size: the next pages cannot be allocated, as on a full disk.
    pages = store._connection.execute("PRAGMA page_count").fetchone()[0]
    store._connection.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = {"blob": "x" * 3000}
    stored = 0
    with pytest.raises(DiskFull) as full:
        for index in range(1000):
            store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, big))
            stored += 1
    assert full.value.status_code == "RESOURCE_EXHAUSTED"
    assert store.get(job.id).frames_done == stored == len(store.frames_after(job.id, None, 5000))
    store.close()
    check = sqlite3.connect(tmp_path / "jobs.sqlite3")
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


def test_results_stop_short_of_the_room_kept_for_ending_and_deleting_jobs(tmp_path: Path) -> None:
    """With a reserve for uploads only, results fill the disk to its last byte, after which no
    job's end can be recorded, nor any job cancelled or deleted, nor the server restarted."""
    keep_free = shutil.disk_usage(tmp_path).free + 1024**3  # more than there is: the disk is "full"
    store = SqliteJobStore(tmp_path, results_keep_free_bytes=keep_free)
    job = store.create(_job(tmp_path))
    store.claim(job.id, 1, 0.0)
    with pytest.raises(DiskFull) as full:
        store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(0, 0.0, {"small": 1}))  # looked at before every result
    assert "half of --job-min-free-bytes" in full.value.message
    assert full.value.details.metadata["results_keep_free_bytes"] == str(keep_free)
    assert store.get(job.id).frames_done == 0
    store.close()

    roomy = SqliteJobStore(tmp_path / "roomy", results_keep_free_bytes=1)
    job = roomy.create(_job(tmp_path))
    roomy.claim(job.id, 1, 0.0)
    for index in range(20):
        assert roomy.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, {"blob": "x" * 50_000}))
    roomy.close()


def test_the_pages_deleted_jobs_left_in_the_database_count_as_room_for_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file keeps its size after a deletion: counted by the disk's free space alone, every
    later job would fail at its first result, though the deleted job's pages are there to reuse."""
    store = SqliteJobStore(tmp_path)
    deleted = _finished_job_with_frames(store, tmp_path, 2000, result={"blob": "x" * 2000})
    store.delete(deleted.id)
    # The disk's free space held still: others writing on a shared disk move it.
    free = 100 * 1024 * 1024
    monkeypatch.setattr(sqlite_results_room.disk_space, "free_bytes", lambda path: free)
    store.results_keep_free_bytes = free + 1024 * 1024  # under the 4 MB freed
    job = store.create(_job(tmp_path))
    store.claim(job.id, 1, 0.0)
    for index in range(100):
        assert store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, {"blob": "x" * 2000}))
    store.results_keep_free_bytes = free + 1024**3
    with pytest.raises(DiskFull):
        store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(100, 0.0, {"small": 1}))
    store.close()


def test_frames_a_full_disk_kept_from_a_deleted_job_go_at_the_next_retention_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's deletion is done and said so; its frames a full disk keeps go at the next pass, not
    at the next restart."""
    store = SqliteJobStore(tmp_path)
    job = _finished_job_with_frames(store, tmp_path, 1500)
    with monkeypatch.context() as patch:
        patch.setattr(store._deletion, "_transaction", _full_disk)  # the job's record goes, its frames do not
        assert store.delete(job.id).id == job.id  # done, and said so
    assert store._connection.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 1500
    store.purge_expired(now=0.0)
    assert store._connection.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
    store.close()


def _full_disk() -> contextlib.AbstractContextManager[sqlite3.Connection]:
    """A write transaction a full disk refuses."""
    raise DiskFull("no space left (injected)")


def _rows_changed_per_transaction(store: SqliteJobStore) -> list[int]:
    """Rows each of the store's write transactions changes, from now on: counted from SQLite's
    trace of the statements it runs, each transaction's BEGIN and COMMIT among them."""
    changes: list[int] = []
    began = 0

    def traced(statement: str) -> None:
        nonlocal began
        if statement.startswith("BEGIN"):
            began = store._connection.total_changes
        elif statement == "COMMIT":
            changes.append(store._connection.total_changes - began)

    store._connection.set_trace_callback(traced)
    return changes


def _finished_job_with_frames(store: SqliteJobStore, tmp_path: Path, frames: int,
                              result: dict[str, Any] | None = None) -> Job:
    job = store.create(_job(tmp_path))
    store.claim(job.id, 1, 0.0)
    for index in range(frames):
        store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, result or {"i": index}))
    store.cancel(job.id, 0.0, expire_at=1.0)
    return job


def test_a_long_jobs_deletion_and_retention_hold_the_store_a_thousand_frames_at_a_time(tmp_path: Path) -> None:
    """In one transaction each, a 100,000-frame job's deletion holds the store's lock for 2.7 s,
    every call and running job waiting on it; the retention of 100,000 small jobs, 1.5 s."""
    store = SqliteJobStore(tmp_path)
    deleted, expired = (_finished_job_with_frames(store, tmp_path, 2500) for _ in range(2))
    small = [_finished_job_with_frames(store, tmp_path, 1) for _ in range(450)]
    changes = _rows_changed_per_transaction(store)
    store.delete(deleted.id)
    assert max(changes) <= 1000 and sum(changes) == 2501
    changes.clear()
    purged = store.purge_expired(now=2.0)
    assert {job.id for job in purged} == {expired.id, *(job.id for job in small)}
    assert max(changes) <= 1000 and sum(changes) == 1 + 2500 + 2 * 450
    assert store._connection.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
    store.close()


def test_frames_a_stop_left_behind_a_deleted_job_are_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteJobStore(tmp_path)
    job = _finished_job_with_frames(store, tmp_path, 1500)
    monkeypatch.setattr(store._deletion, "delete_frames_of", lambda job_ids: None)  # the process ends there
    store.delete(job.id)
    store.close()
    store = SqliteJobStore(tmp_path)
    store.recover(now=0.0, max_attempts=3, expire_at=60.0)
    assert store._connection.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
    store.close()


def test_a_write_a_full_disk_rolled_back_does_not_wake_the_jobs_watches(tmp_path: Path) -> None:
    """Told to the watches before the commit fails, its change leaves the job's revision in
    memory one ahead of the stored one, and each watch re-reads the job without waiting, for as
    long as the disk stays full (thousands of reads a second per watch)."""
    store = SqliteJobStore(tmp_path)
    job = store.create(_job(tmp_path))
    store.claim(job.id, 1, 0.0)
    pages = store._connection.execute("PRAGMA page_count").fetchone()[0]
    store._connection.execute(f"PRAGMA max_page_count = {pages + 1}")
    with pytest.raises(DiskFull):
        for index in range(1000):
            store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, {"blob": "x" * 3000}))
    revision = store.get(job.id).revision
    started = time.monotonic()
    store.wait_for_change(job.id, revision, None, timeout=0.5)
    assert time.monotonic() - started >= 0.4, "the watch was woken by a change that was rolled back"
    store.close()


def _job(tmp_path: Path, pipeline_id: str = "paced", video_ref: str = "missing.avi") -> Job:
    return Job(new_job_id(), JobState.QUEUED, pipeline_id, SamplingOptions(), _stored(video_ref), 0.0)


def _stored(ref: str) -> StoredVideo:
    return StoredVideo(ref, 1, "0" * 64)


class _Parts:
    def __init__(self, tmp_path: Path, dag: DagPipelineService, timeout: float = 60.0) -> None:
        self.store = SqliteJobStore(tmp_path / "data")
        self.uploads = DirectoryUploadStorage(tmp_path / "data" / "uploads")
        self.executor = JobExecutor(self.store, self.uploads, dag, VideoFilePipelineService(dag),
                                    job_timeout_seconds=timeout, retention_seconds=60)

    def submit(self, clip: Path, pipeline_id: str) -> Job:
        job_id = new_job_id()
        video = self.uploads.store(lambda: job_id, chunks_of(clip), max_upload_bytes=10**7, declared_size=None,
                                   declared_sha256=None, file_name=clip.name)
        return self.store.create(Job(job_id, JobState.QUEUED, pipeline_id, SamplingOptions(), video, 0.0))


def test_the_executor_stores_every_result_then_deletes_the_video(tmp_path: Path, dag: DagPipelineService,
                                                                 clip: Path) -> None:
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "frame_stats_v1")

    assert parts.executor.execute(job.id, 1) is JobState.SUCCEEDED
    assert parts.executor.execute(job.id, 1) is None, "a finished job is not claimed again"

    done = parts.store.get(job.id)
    assert done.summary is not None and done.summary.frames_processed == 30 == done.frames_done == done.frames_total
    assert [f.frame_index for f in parts.store.frames_after(job.id, None, 100)] == list(range(30))
    assert list(parts.uploads.refs()) == []
    parts.store.close()


def test_a_job_over_its_time_limit_fails_with_deadline_exceeded(tmp_path: Path, dag: DagPipelineService,
                                                                 clip: Path) -> None:
    parts = _Parts(tmp_path, dag, timeout=1.0)
    job = parts.submit(clip, "crawling")

    assert parts.executor.execute(job.id, 1) is JobState.FAILED

    failed = parts.store.get(job.id)
    assert failed.error is not None and failed.error.status_code == DeadlineExceeded.status_code
    assert 0 < failed.frames_done < 30
    parts.store.close()


def test_a_shutdown_queues_the_job_again_in_the_same_attempt(tmp_path: Path, dag: DagPipelineService,
                                                              clip: Path) -> None:
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "paced")
    calls = 0

    def stop_after_a_few_frames() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(JobInterrupted):
        parts.executor.execute(job.id, 1, should_stop=stop_after_a_few_frames)

    interrupted = parts.store.get(job.id)
    assert (interrupted.state, interrupted.attempt, interrupted.frames_done) == (JobState.QUEUED, 1, 0)
    assert parts.store.frames_after(job.id, None, 100) == [], "the re-run starts from the first frame"
    assert list(parts.uploads.refs()) == [job.video.ref], "the video stays for the re-run"
    assert parts.executor.execute(job.id, 1) is JobState.SUCCEEDED, "the next start runs it in the same attempt"
    parts.store.close()


class _FlakyStore(SqliteJobStore):
    """A store whose `claim` and `finish` each fail their first `failures` calls, as a disk
    with a passing I/O error would."""

    def __init__(self, root: Path, failures: dict[str, int]) -> None:
        super().__init__(root)
        self.failures = dict(failures)

    def _maybe_fail(self, method: str) -> None:
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            raise sqlite3.OperationalError(f"disk I/O error in {method} (injected)")

    def claim(self, *args: Any, **kwargs: Any) -> Job | None:
        self._maybe_fail("claim")
        return super().claim(*args, **kwargs)

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        self._maybe_fail("finish")
        return super().finish(*args, **kwargs)


def _flaky_parts(tmp_path: Path, dag: DagPipelineService, clock: Callable[[], float] = time.time,
                 **failures: int) -> _Parts:
    parts = _Parts(tmp_path, dag)
    parts.store.close()
    parts.store = _FlakyStore(tmp_path / "data", failures)
    parts.executor = JobExecutor(parts.store, parts.uploads, dag, VideoFilePipelineService(dag),
                                 job_timeout_seconds=60, retention_seconds=60, clock=clock)
    return parts


def test_an_end_the_store_failed_to_record_is_recorded_at_the_next_try(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    now = 1000.0
    parts = _flaky_parts(tmp_path, dag, clock=lambda: now, finish=1)
    job = parts.submit(clip, "frame_stats_v1")

    assert parts.executor.execute(job.id, 1) is JobState.RUNNING
    assert parts.store.get(job.id).state is JobState.RUNNING
    assert list(parts.uploads.refs()) == [job.video.ref], "kept until the end is recorded"

    now = 1010.0  # a maintenance pass later
    parts.executor.record_pending_ends()  # what maintenance does
    done = parts.store.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.summary is not None and done.summary.frames_processed == 30
    assert done.finished_at == 1000.0, "when it ended, not when recorded"
    assert list(parts.uploads.refs()) == []
    parts.executor.record_pending_ends()  # nothing left to do
    assert parts.store.get(job.id).state is JobState.SUCCEEDED
    parts.store.close()


def test_a_job_the_store_would_not_let_start_is_handed_to_the_workers_again(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    parts = _flaky_parts(tmp_path, dag, claim=1)
    job = parts.submit(clip, "frame_stats_v1")
    workers = ThreadPoolJobQueue(parts.executor, 1)
    try:
        workers.dispatch(job)
        assert wait_until(lambda: parts.store.failures["claim"] == 0)
        assert workers.wait_until_idle(10), "the worker is done with it"
        assert parts.store.get(job.id).state is JobState.QUEUED, "not started, not lost"

        def retried_until_it_ran() -> bool:
            workers.retry_stranded()  # what maintenance does, at every pass
            return parts.store.get(job.id).state is JobState.SUCCEEDED

        assert wait_until(retried_until_it_ran, timeout=20)
    finally:
        workers.close()
        parts.store.close()


def test_a_job_held_by_a_long_plugin_call_at_a_stop_is_queued_again_in_its_attempt(
    tmp_path: Path, dag: DagPipelineService, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run stops at its next frame, which the call puts far away: left to the run, the
    release would meet a closed store, and the next start would count the clean stop as a crash."""
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "heavy")
    workers = ThreadPoolJobQueue(parts.executor, 1)
    workers.dispatch(job)
    # RUNNING is recorded at the claim, before the video opens: wait for the video's record, made
    # after the run's last look at should_stop before the 4 s plugin call.
    assert wait_until(lambda: parts.store.get(job.id).frames_total > 0, timeout=30)
    workers.close(timeout=0.2)
    (worker,) = workers._threads
    assert worker.is_alive(), "the plugin call goes on"
    stopped = parts.store.get(job.id)
    assert (stopped.state, stopped.attempt) == (JobState.QUEUED, 1)
    assert "did not stop within 0.2 s" in caplog.text
    parts.store.close()  # as the service does next
    worker.join(30)  # its call returns, and the run ends without a word of the closed store
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    store = SqliteJobStore(tmp_path / "data")
    assert (store.get(job.id).state, store.get(job.id).attempt, store.get(job.id).frames_done) == (
        JobState.QUEUED, 1, 0)
    assert list(parts.uploads.refs()) == [job.video.ref], "the video stays for the next start"
    store.close()


def test_a_run_whose_results_the_store_lost_queues_the_job_again_rather_than_succeed_with_holes(
    tmp_path: Path, dag: DagPipelineService, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "frame_stats_v1")
    store_append = parts.store.append_frame

    def append_losing_frame_3(run: RunClaim, frame: JobFrame) -> bool:
        return True if frame.frame_index == 3 else store_append(run, frame)  # taken, then lost

    parts.store.append_frame = append_losing_frame_3  # type: ignore[method-assign]
    assert parts.executor.execute(job.id, 1) is JobState.QUEUED

    requeued = parts.store.get(job.id)
    assert (requeued.state, requeued.attempt, requeued.frames_done) == (JobState.QUEUED, 1, 0)
    assert f"job {job.id}: 29 results stored of the 30 its run processed" in caplog.text
    assert list(parts.uploads.refs()) == [job.video.ref], "the video stays for the run again"
    parts.store.append_frame = store_append  # type: ignore[method-assign]
    assert parts.executor.execute(job.id, 1) is JobState.SUCCEEDED
    assert [f.frame_index for f in parts.store.frames_after(job.id, None, 100)] == list(range(30))
    parts.store.close()


def test_a_stop_while_a_claim_is_slow_to_come_back_queues_the_job_again_in_its_attempt(
    tmp_path: Path, dag: DagPipelineService, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim is made, its return held up (a slow disk) past the stop's wait: the stop found no
    run to release, the run's own release met a closed store, and the next start counted the
    clean stop as a crash."""
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "paced")
    claimed = threading.Event()
    store_claim = parts.store.claim

    def slow_claim(job_id: str, attempt: int, now: float) -> Job | None:
        made = store_claim(job_id, attempt, now)
        claimed.set()
        time.sleep(1.0)
        return made

    parts.store.claim = slow_claim  # type: ignore[method-assign]
    workers = ThreadPoolJobQueue(parts.executor, 1)
    workers.dispatch(job)
    assert claimed.wait(10)
    workers.close(timeout=0.2)
    stopped = parts.store.get(job.id)
    assert (stopped.state, stopped.attempt) == (JobState.QUEUED, 1)
    assert "did not stop within 0.2 s" in caplog.text
    parts.store.close()  # as the service does next
    (worker,) = workers._threads
    worker.join(30)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    store = SqliteJobStore(tmp_path / "data")
    assert (store.get(job.id).state, store.get(job.id).attempt) == (JobState.QUEUED, 1)
    store.close()


def test_a_stop_warns_of_no_job_that_ended_by_itself(
    tmp_path: Path, dag: DagPipelineService, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = _Parts(tmp_path, dag)
    job = parts.submit(clip, "paced")
    workers = ThreadPoolJobQueue(parts.executor, 1)
    workers.dispatch(job)
    assert wait_until(lambda: parts.store.get(job.id).state is JobState.SUCCEEDED, timeout=20)
    workers.close(timeout=0.2)
    assert "queued again" not in caplog.text
    parts.store.close()




def test_at_start_only_the_videos_of_queued_and_running_jobs_are_kept(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    """A job cancelled while it ran, its server killed before the run stopped, must not keep its
    video for its whole retention (7 days by default), nor a video stored for a job never created
    stay for good."""
    store = SqliteJobStore(tmp_path / "data")
    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir()
    jobs = {}
    for name in ("cancelled", "queued", "running"):
        job_id = new_job_id(time.time())
        # "crawling" runs 3 s: both kept videos are still in use when they are looked at.
        jobs[name] = store.create(Job(id=job_id, state=JobState.QUEUED, pipeline_id="crawling",
                                      sampling=SamplingOptions(), video=StoredVideo(f"{job_id}.avi", 3, "ab" * 32),
                                      created_at=time.time(), file_name="clip.avi"))
        shutil.copyfile(clip, uploads / f"{job_id}.avi")
    store.claim(jobs["running"].id, 1, time.time())
    store.claim(jobs["cancelled"].id, 1, time.time())
    store.cancel(jobs["cancelled"].id, time.time(), time.time() + 3600)
    (uploads / f"{new_job_id(time.time())}.mp4").write_bytes(b"never a job")
    (uploads / ".keep").write_bytes(b"")  # files of no job's are not ours to remove, nor a reason not to start
    (uploads / "notes.txt").write_bytes(b"an operator's")
    store.close()

    started = open_job_service(JobConfig(data_dir=tmp_path / "data", max_upload_bytes=10**7, workers=1), dag)
    try:
        kept = sorted(path.name for path in uploads.iterdir() if path.is_file())
        assert kept == sorted([".keep", "notes.txt", *(f"{jobs[name].id}.avi" for name in ("queued", "running"))])
    finally:
        started.close()


def test_a_database_holding_no_job_beside_videos_warns_and_keeps_them_for_a_look(
    tmp_path: Path, dag: DagPipelineService, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A backup of a running server's folder without its log (jobs.sqlite3-wal, where the latest
    writes are) restored as an empty database: the start deleted every video as no job's, without
    a word above INFO. A crash before a first job's record leaves the same state, so the start
    goes on; the videos wait for maintenance's next look."""
    data = tmp_path / "data"
    SqliteJobStore(data).close()
    (data / "uploads").mkdir()
    video = data / "uploads" / f"{new_job_id(time.time() - 7200)}.avi"  # stored two hours ago
    shutil.copyfile(clip, video)
    service = open_job_service(JobConfig(data_dir=data, max_upload_bytes=10**7, workers=1), dag)
    try:
        assert (f"the job database in {data} (--data-dir) holds no job, but its uploads folder holds 1 video(s): a "
                "database restored without its log (jobs.sqlite3-wal)") in caplog.text
        service.run_maintenance()
        assert video.exists(), "kept at the start and at the first maintenance pass, for the operator to look"
    finally:
        service.close()


@pytest.fixture
def service(tmp_path: Path, dag: DagPipelineService) -> Iterator[JobService]:
    started = open_job_service(JobConfig(data_dir=tmp_path / "data", max_upload_bytes=10**7, workers=1), dag)
    yield started
    started.close()


def test_an_unknown_pipeline_is_refused_before_a_byte_is_read(service: JobService, clip: Path) -> None:
    read = []

    def chunks() -> Iterator[bytes]:
        read.append(True)
        yield clip.read_bytes()

    with pytest.raises(PipelineNotFound):
        service.submit(JobRequest("nope"), chunks())
    assert read == []


def test_a_watch_sends_progress_sparingly_and_ends_with_the_final_job(service: JobService, clip: Path) -> None:
    job = service.submit(JobRequest("paced"), chunks_of(clip))
    events = list(service.watch(job.id))

    updates = [event for event in events if isinstance(event, Job)]
    frames = [event for event in events if isinstance(event, JobFrame)]
    assert events[-1] == updates[-1] and updates[-1].state is JobState.SUCCEEDED
    assert [frame.frame_index for frame in frames] == list(range(30))
    assert len(updates) < 15, "progress is throttled, not one update per frame"
    assert updates[0].state in (JobState.QUEUED, JobState.RUNNING)


def test_a_watch_from_before_the_first_frame_is_refused_naming_the_index(service: JobService, clip: Path) -> None:
    job = service.submit(JobRequest("paced"), chunks_of(clip))
    with pytest.raises(InvalidOptions) as refused:
        service.watch(job.id, after_frame_index=-2)
    assert [(violation.field, violation.description) for violation in refused.value.details.field_violations] == [
        ("after_frame_index", "must be -1 or more, got -2")
    ]
    assert list(service.watch(job.id, after_frame_index=-1))[-1].state is JobState.SUCCEEDED


def test_a_watch_ends_when_its_caller_goes_away(service: JobService, clip: Path) -> None:
    job = service.submit(JobRequest("paced"), chunks_of(clip))
    gone = threading.Event()
    events = service.watch(job.id, stop_requested=gone.is_set)
    next(events)
    gone.set()
    remaining = list(events)
    assert not any(isinstance(event, Job) and event.state.is_finished for event in remaining)
    service.cancel(job.id)


def test_a_watch_told_to_stop_as_its_job_finishes_still_ends_with_the_final_state(
    service: JobService, clip: Path
) -> None:
    """The shutdown grace over just as the job ended: the watch stopped before its final state,
    and its client, resuming on another replica of the embedded backend, found no such job."""
    job = service.submit(JobRequest("paced"), chunks_of(clip))
    assert list(service.watch(job.id))[-1].state is JobState.SUCCEEDED
    events = list(service.watch(job.id, 25, stop_requested=lambda: True))
    assert [event.frame_index for event in events[:-1]] == [26, 27, 28, 29]
    assert isinstance(events[-1], Job) and events[-1].state is JobState.SUCCEEDED


def test_a_slow_upload_is_created_when_it_is_stored_and_lists_before_jobs_submitted_meanwhile(
    service: JobService, clip: Path
) -> None:
    data = clip.read_bytes()
    started, release = threading.Event(), threading.Event()
    ended: list[float] = []
    submitted: list[Job] = []

    def slow_chunks() -> Iterator[bytes]:
        yield data[:4096]
        started.set()
        release.wait(30)
        yield data[4096:]
        ended.append(time.time())

    slow = threading.Thread(target=lambda: submitted.append(service.submit(JobRequest("paced"), slow_chunks())))
    slow.start()
    assert started.wait(30)
    meanwhile = service.submit(JobRequest("paced"), chunks_of(clip))
    time.sleep(0.01)  # ids count milliseconds
    release.set()
    slow.join(30)

    [late] = submitted
    assert late.created_at >= ended[0] > meanwhile.created_at
    assert late.id > meanwhile.id
    assert [job.id for job in service.list_jobs().jobs] == [late.id, meanwhile.id]
    assert service.list_jobs(page_size=1).jobs[0].id == late.id
    assert late.video.ref.startswith(late.id)


def test_the_queue_depth_leaves_out_jobs_cancelled_while_they_waited(service: JobService, clip: Path) -> None:
    """The metric an autoscaler reads: a cancelled job waits for nothing, though the worker
    pool's own list keeps it until a worker is free to skip it."""
    running = service.submit(JobRequest("crawling"), chunks_of(clip))  # 3 s: the only worker is busy
    assert wait_until(lambda: service.get(running.id).state is JobState.RUNNING)
    waiting = [service.submit(JobRequest("paced"), chunks_of(clip)) for _ in range(3)]
    assert service.queue_depth() == 3
    for job in waiting[:2]:
        service.cancel(job.id)
    assert service.queue_depth() == 1
    service.cancel(running.id)
    service.cancel(waiting[2].id)
