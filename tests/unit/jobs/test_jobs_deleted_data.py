"""What a deleted job leaves in the embedded store's files: its results, file name and key are
read back from the database file and its write-ahead log as bytes, as `strings` would."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import counter_pipeline, dag_with_test_pipelines
from videodag_service import disk_space
from videodag_service.errors import DiskFull
from videodag_service.jobs import Job, JobConfig, JobFrame, JobState, SqliteJobStore, StoredVideo, open_job_service
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.video import SamplingOptions

# Long enough for the deletion to free whole pages of results, which FAST alone leaves as they were.
_FRAMES = 300
_STORE_FILES = ("jobs.sqlite3", "jobs.sqlite3-wal")


def test_a_deleted_jobs_results_name_and_key_leave_the_database_and_its_log(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    kept = _finished_job(store, "KEPT-RESULT")
    deleted = _finished_job(store, "DELETED-RESULT")
    assert _files_holding(tmp_path, "DELETED-RESULT") != []

    store.delete(deleted.id)

    assert _files_holding(tmp_path, "DELETED-RESULT") == []
    assert len(store.frames_after(kept.id, None, 1000)) == _FRAMES
    store.close()


def test_the_results_of_jobs_past_their_retention_leave_the_database_and_its_log(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    kept = _finished_job(store, "KEPT-RESULT", expire_at=100.0)
    expired = _finished_job(store, "EXPIRED-RESULT", expire_at=1.0)

    assert [job.id for job in store.purge_expired(now=2.0)] == [expired.id]

    assert _files_holding(tmp_path, "EXPIRED-RESULT") == []
    assert len(store.frames_after(kept.id, None, 1000)) == _FRAMES
    store.close()


def test_a_reader_on_an_older_snapshot_delays_the_erasure_to_the_next_maintenance_not_the_delete(
    tmp_path: Path,
) -> None:
    """Another process reading the database keeps the log from being checkpointed; waiting for it
    would hold DeleteJob for the store's whole busy timeout (30 s)."""
    (tmp_path / "pipelines").mkdir()
    dag = dag_with_test_pipelines(tmp_path / "pipelines", {"paced.yaml": counter_pipeline("paced")})
    service = open_job_service(JobConfig(data_dir=tmp_path / "data", max_upload_bytes=10**7, workers=1), dag)
    try:
        store = service._store
        assert isinstance(store, SqliteJobStore)
        job = _finished_job(store, "DELETED-RESULT")
        with _reader_holding_a_snapshot(tmp_path / "data"):
            started = time.monotonic()
            service.delete(job.id)
            assert time.monotonic() - started < 5
            assert store.frames_after(job.id, None, 10) == []  # deleted, and said so
            assert "jobs.sqlite3-wal" in _files_holding(tmp_path / "data", "DELETED-RESULT")
            service.run_maintenance()  # the reader still holds it
            assert _files_holding(tmp_path / "data", "DELETED-RESULT") != []
        service.run_maintenance()
        assert _files_holding(tmp_path / "data", "DELETED-RESULT") == []
    finally:
        service.close()


def test_a_failed_checkpoint_leaves_the_deletion_done_says_so_once_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteJobStore(tmp_path)
    first, second = _finished_job(store, "FIRST-RESULT"), _finished_job(store, "SECOND-RESULT")
    erasure = store._erasure
    connection = erasure._connection
    erasure._connection = _CheckpointsFail(connection)  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG, logger="videodag_service.jobs.sqlite_erasure"):
        assert store.delete(first.id).id == first.id
        store.erase_deleted_data()  # a maintenance pass
        assert store.delete(second.id).id == second.id
    kept = [record for record in caplog.records if "kept in the job store's log" in record.getMessage()]
    assert [record.levelno for record in kept] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "database or disk is full" in kept[0].getMessage()
    assert store.frames_after(first.id, None, 10) == store.frames_after(second.id, None, 10) == []
    assert "jobs.sqlite3-wal" in _files_holding(tmp_path, "FIRST-RESULT")

    erasure._connection = connection
    store.erase_deleted_data()

    assert _files_holding(tmp_path, "FIRST-RESULT") == _files_holding(tmp_path, "SECOND-RESULT") == []
    store.close()


def test_on_a_disk_short_of_room_the_log_keeps_its_size_until_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncated on a nearly full disk, the log would give its room to whatever writes next, and
    the next deletion, or a job's end, could find none."""
    store = SqliteJobStore(tmp_path)
    job = _finished_job(store, "DELETED-RESULT")
    free = 0
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: free)
    store.delete(job.id)
    assert store.frames_after(job.id, None, 10) == []
    assert (tmp_path / "jobs.sqlite3-wal").stat().st_size > 0

    free = 10**12
    store.erase_deleted_data()

    assert (tmp_path / "jobs.sqlite3-wal").stat().st_size == 0
    store.close()


@pytest.mark.parametrize(("free", "most_at_once"), [(10**12, 100), (0, 1000)])
def test_zeroing_deletes_fewer_frames_a_transaction_to_hold_the_store_no_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, most_at_once: int
) -> None:
    """Zeroing writes each freed page through the log: 1,000 results of 32 KB a transaction held
    the store's lock half a second, every read and running job waiting on it."""
    store = SqliteJobStore(tmp_path)
    job = _finished_job(store, "DELETED-RESULT", frames=2500)
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: free)
    deleted_at_once: list[int] = []
    deleting = store._erasure.deleting

    def counted(transaction: Any, delete: Any) -> Any:
        deleted = deleting(transaction, delete)
        if isinstance(deleted, int):  # a batch of frames (the record's deletion returns the job)
            deleted_at_once.append(deleted)
        return deleted

    monkeypatch.setattr(store._erasure, "deleting", counted)
    store.delete(job.id)
    assert max(deleted_at_once) == most_at_once and sum(deleted_at_once) == 2500
    store.close()


def test_a_deletion_refused_for_the_room_zeroing_takes_runs_again_without_zeroing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zeroing a freed page writes it through the log: on a full disk, a deletion that insisted
    on it could never free any room."""
    store = SqliteJobStore(tmp_path)
    job = _finished_job(store, "DELETED-RESULT")
    transaction = store._transaction

    def full_while_zeroing() -> contextlib.AbstractContextManager[sqlite3.Connection]:
        if store._connection.execute("PRAGMA secure_delete").fetchone()[0] == 1:
            raise DiskFull("no space left to zero the freed pages (injected)")
        return transaction()

    monkeypatch.setattr(store, "_transaction", full_while_zeroing)
    monkeypatch.setattr(store._deletion, "_transaction", full_while_zeroing)

    assert store.delete(job.id).id == job.id
    assert store.frames_after(job.id, None, 10) == []
    assert store._connection.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST for every other write
    assert "jobs.sqlite3-wal" not in _files_holding(tmp_path, "DELETED-RESULT")
    store.close()


class _CheckpointsFail:
    """The store's connection, but every checkpoint fails as on a full disk."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return self._connection.execute(sql, *parameters)


@contextlib.contextmanager
def _reader_holding_a_snapshot(data_dir: Path) -> Iterator[None]:
    reader = sqlite3.connect(data_dir / "jobs.sqlite3", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM frames").fetchone()
        yield
    finally:
        reader.close()


def _finished_job(store: SqliteJobStore, text: str, expire_at: float = 1.0, frames: int = _FRAMES) -> Job:
    """A cancelled job whose results, file name and idempotency key all hold `text`."""
    video = StoredVideo("gone.avi", 1, "0" * 64)
    job = store.create(Job(new_job_id(), JobState.QUEUED, "paced", SamplingOptions(), video, 0.0,
                           file_name=f"{text}.avi", idempotency_key=f"{text}-key"))
    store.claim(job.id, 1, 0.0)
    for index in range(frames):
        store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, 0.0, {"ocr": f"{text} {index}", "pad": "y" * 200}))
    store.cancel(job.id, 0.0, expire_at)
    return job


def _files_holding(data_dir: Path, text: str) -> list[str]:
    """Which of the store's files hold `text` anywhere in their bytes."""
    return [name for name in _STORE_FILES
            if (data_dir / name).exists() and text.encode() in (data_dir / name).read_bytes()]
