"""The embedded `JobStore`: one SQLite database in WAL mode under the data directory.

WAL lets watchers read while a worker appends, and with `synchronous=NORMAL` a crash of the
process can lose at most the last transactions, never corrupt the database. Every result is
committed as it is produced (one small transaction per frame). A full disk surfaces as
DiskFull (RESOURCE_EXHAUSTED): the failed transaction is rolled back and nothing half-written
remains.

One process owns a data directory at a time (`DataDirectoryLock`): the embedded backend's
recovery assumes every RUNNING job it finds at start was interrupted, and watches are woken by
this process's writes alone (`JobChangeSignals`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from videodag_service.errors import DiskFull, ErrorDetails, JobNotFound
from videodag_service.jobs import records
from videodag_service.jobs.change_signals import JobChangeSignals
from videodag_service.jobs.data_dir_lock import DATABASE_FILE, DataDirectoryLock, private_file
from videodag_service.jobs.ids import page_token_after
from videodag_service.jobs.model import Job, JobError, JobFrame, JobPage, JobState, JobSummary, RunClaim
from videodag_service.jobs.sqlite_deletion import BatchedDeletion
from videodag_service.jobs.sqlite_erasure import DeletedDataErasure
from videodag_service.jobs.sqlite_results_room import check_room_for_results
from videodag_service.jobs.store import (
    MAX_ATTEMPTS_ERROR,
    JobStore,
    LostHandOvers,
    StoredResultsLost,
    check_cancellable,
    check_deletable,
)
from videodag_service.private_folders import private_directory
from videodag_service.video import VideoInfo

logger = logging.getLogger(__name__)

# Raised when a change would mislead an earlier release reading the database (a column given
# another meaning, a table it relies on gone); added columns and JSON fields need no new
# version: earlier releases read what they know (`records`).
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pipeline_id TEXT NOT NULL,
    sampling TEXT NOT NULL,
    file_name TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    video_ref TEXT NOT NULL,
    video_size_bytes INTEGER NOT NULL,
    video_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    expire_at REAL,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0,
    video_info TEXT,
    summary TEXT,
    error TEXT,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS frames (
    job_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    timestamp_seconds REAL NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, frame_index)
) WITHOUT ROWID;
"""
_SQLITE_FULL = 13
_FINISHED_STATES = tuple(state.value for state in JobState if state.is_finished)
# A run's writes hold while the job runs under the run's claim (`RunClaim`): its attempt and
# its claim's time.
_RUNNING_UNDER_CLAIM = "state = 'RUNNING' AND attempt = ? AND started_at = ?"
# The log is truncated to this after each checkpoint; without a limit it stays as large as the
# largest deletion ever made (hundreds of MB after one long job's).
_LOG_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


class JobStoreFromLaterRelease(RuntimeError):
    """Raised at start for a database whose schema version is later than this release's."""


class SqliteJobStore(JobStore):
    """Jobs in `<data_dir>/jobs.sqlite3`; safe to share between threads of one process."""

    def __init__(self, data_dir: str | os.PathLike[str], *, results_keep_free_bytes: int = 0) -> None:
        """`results_keep_free_bytes`: a running job's next result is refused (DiskFull, its job
        fails) once the disk has less free: room kept for recording the ends of jobs, and for
        cancelling and deleting them, which write too. Uploads keep a larger reserve."""
        self.results_keep_free_bytes = results_keep_free_bytes
        self.data_dir = private_directory(Path(data_dir))
        self._data_dir_lock = DataDirectoryLock(self.data_dir)
        new_database = not (self.data_dir / DATABASE_FILE).exists()
        try:
            database = private_file(self.data_dir / DATABASE_FILE)
            self._connection = sqlite3.connect(database, check_same_thread=False, isolation_level=None, timeout=30)
        except BaseException as error:  # no inode left for the file, say
            self._data_dir_lock.abandon_start(error, new_database)
            raise
        self._data_dir_lock.remember_opened_files()
        self._connection.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._changes = JobChangeSignals(self._lock)
        self._uncommitted_changes: list[tuple[str, int | None]] = []
        self._erasure = DeletedDataErasure(self._connection, self._lock, self.data_dir)
        self._deletion = BatchedDeletion(self._connection, self._lock, self._transaction, self._note_deleted,
                                         self._erasure)
        self._recovered = False
        try:
            with self._lock, _disk_full_as_error():
                self._refuse_a_later_schema()  # before anything is written, the journal mode included
                self._connection.execute("PRAGMA journal_mode=WAL")
                self._connection.execute("PRAGMA synchronous=NORMAL")
                # Python's SQLite may be built to zero every freed page, through the log: deleting
                # a job then takes as much free space as its results, and on a full disk neither a
                # DeleteJob nor the retention can free any. FAST zeroes only what costs no I/O;
                # deletions zero freed pages too where the disk has room (`DeletedDataErasure`).
                self._connection.execute("PRAGMA secure_delete=FAST")
                self._connection.execute(f"PRAGMA journal_size_limit={_LOG_SIZE_LIMIT_BYTES}")
                self._connection.executescript(_SCHEMA)
                self._connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException as error:
            self._connection.close()
            self._data_dir_lock.abandon_start(error, new_database)
            raise

    def _refuse_a_later_schema(self) -> None:
        """A database a later release laid out differently is not this release's to write: the
        version it was stamped with says so (0 for one just made)."""
        found = self._connection.execute("PRAGMA user_version").fetchone()[0]
        if found > _SCHEMA_VERSION:
            raise JobStoreFromLaterRelease(
                f"the job store {os.fspath(self.data_dir / DATABASE_FILE)} was laid out by a later release of the "
                f"server (schema version {found}; this release reads version {_SCHEMA_VERSION} and before): start "
                "that release, or give this one another --data-dir"
            )

    def close(self) -> None:
        with self._lock:
            self._connection.close()
        self._data_dir_lock.release()

    def kept_in_place(self) -> str | None:
        return self._data_dir_lock.kept_in_place()

    def close_and_discard(self, also: Callable[[], None]) -> None:
        """All goes while the lock is still held, so no server starting meanwhile uses any of it."""
        with self._lock:
            empty = self._connection.execute("SELECT 1 FROM jobs LIMIT 1").fetchone() is None
            self._connection.close()
            if empty:
                also()
                self._data_dir_lock.remove_store_files()
        self._data_dir_lock.release()

    # --- service side ---------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        with self._transaction() as db:
            if job.idempotency_key is not None:
                existing = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (job.idempotency_key,)).fetchone()
                if existing is not None:
                    return _job_from_row(existing)
            db.execute(
                """INSERT INTO jobs (id, state, attempt, pipeline_id, sampling, file_name, idempotency_key,
                       video_ref, video_size_bytes, video_sha256, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    job.id, job.state.value, job.attempt, job.pipeline_id, records.sampling_to_text(job.sampling),
                    job.file_name, job.idempotency_key, job.video.ref, job.video.size_bytes, job.video.sha256,
                    job.created_at,
                ),
            )
        return job

    def find_by_idempotency_key(self, key: str) -> Job | None:
        row = self._query_one("SELECT * FROM jobs WHERE idempotency_key = ?", (key,))
        return None if row is None else _job_from_row(row)

    def get(self, job_id: str) -> Job:
        row = self._query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        return _job_from_row(row)

    def list_jobs(self, page_size: int, after_job_id: str | None, states: Sequence[JobState]) -> JobPage:
        conditions, parameters = [], []
        if after_job_id is not None:
            conditions.append("id < ?")
            parameters.append(after_job_id)
        if states:
            conditions.append(f"state IN ({', '.join('?' * len(states))})")
            parameters.extend(state.value for state in states)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", (*parameters, page_size + 1)
            ).fetchall()
        jobs = tuple(_job_from_row(row) for row in rows[:page_size])
        token = page_token_after(jobs[-1].id) if len(rows) > page_size else ""
        return JobPage(jobs, token)

    def count_queued(self) -> int:
        """Jobs waiting for a worker (the queue-depth metric)."""
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED'").fetchone()[0])

    def cancel(self, job_id: str, now: float, expire_at: float) -> tuple[Job, JobState]:
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            previous = JobState(row["state"])
            check_cancellable(job_id, previous)
            if previous is not JobState.CANCELLED:
                self._update(
                    db, job_id, "state = ?, finished_at = ?, expire_at = ?", (JobState.CANCELLED.value, now, expire_at)
                )
        return self.get(job_id), previous

    def delete(self, job_id: str) -> Job:
        job = self._erasure.deleting(self._transaction, functools.partial(self._delete_record, job_id))
        self._deletion.delete_frames_of([job_id])
        self.erase_deleted_data()
        return job

    def _delete_record(self, job_id: str, db: sqlite3.Connection) -> Job:
        job = self.get(job_id)
        check_deletable(job_id, job.state)
        db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._note_deleted([job_id])
        return job

    def frames_after(self, job_id: str, after_frame_index: int | None, limit: int) -> list[JobFrame]:
        after = -1 if after_frame_index is None else after_frame_index
        with self._lock:
            rows = self._connection.execute(
                """SELECT frame_index, timestamp_seconds, result FROM frames
                   WHERE job_id = ? AND frame_index > ? ORDER BY frame_index LIMIT ?""",
                (job_id, after, limit),
            ).fetchall()
        return [JobFrame(row[0], row[1], records.result_from_text(row[2])) for row in rows]

    def wait_for_change(self, job_id: str, revision: int, after_frame_index: int | None, timeout: float) -> None:
        # Every write in this process raises the in-memory revision, and only this process
        # writes (the data directory is locked): frames and state changes both wake waiters.
        self._changes.wait(job_id, revision, timeout)

    # --- worker side ----------------------------------------------------------------------

    def claim(self, job_id: str, attempt: int, now: float) -> Job | None:
        with self._transaction() as db:
            claimed = self._update(
                db,
                job_id,
                "state = 'RUNNING', started_at = ?, frames_done = 0, frames_total = 0, video_info = NULL",
                (now,),
                condition="state = 'QUEUED' AND attempt = ?",
                condition_parameters=(attempt,),
            )
            if claimed:
                db.execute("DELETE FROM frames WHERE job_id = ?", (job_id,))
            elif not self._is_running(db, RunClaim(job_id, attempt, now)):
                return None  # not a repeat of the claim that made it RUNNING
        return self.get(job_id)

    def release(self, run: RunClaim, now: float) -> bool:
        with self._transaction() as db:
            released = self._update_running(
                db, run, "state = 'QUEUED', frames_done = 0, frames_total = 0, video_info = NULL", ()
            )
            if released:
                db.execute("DELETE FROM frames WHERE job_id = ?", (run.job_id,))
            return released

    def queue_next_attempt(self, run: RunClaim, now: float) -> bool:
        with self._transaction() as db:
            queued = self._update_running(
                db, run,
                "state = 'QUEUED', attempt = attempt + 1, frames_done = 0, frames_total = 0, video_info = NULL", (),
            )
            if queued:
                db.execute("DELETE FROM frames WHERE job_id = ?", (run.job_id,))
            return queued

    def record_video(self, run: RunClaim, info: VideoInfo, frames_total: int) -> bool:
        with self._transaction() as db:
            return self._update_running(
                db, run, "video_info = ?, frames_total = ?", (records.video_info_to_text(info), frames_total)
            )

    def append_frame(self, run: RunClaim, frame: JobFrame) -> bool:
        result = records.result_to_text(frame.result)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM frames WHERE job_id = ? AND frame_index = ?",
                          (run.job_id, frame.frame_index)).fetchone() is not None:
                return self._is_running(db, run)  # stored already: a repeated write
            check_room_for_results(db, self.data_dir, self.results_keep_free_bytes)
            if not self._update_running(db, run, "frames_done = frames_done + 1", ()):
                return False
            db.execute(
                "INSERT INTO frames (job_id, frame_index, timestamp_seconds, result) VALUES (?, ?, ?, ?)",
                (run.job_id, frame.frame_index, frame.timestamp_seconds, result),
            )
        return True

    @staticmethod
    def _is_running(db: sqlite3.Connection, run: RunClaim) -> bool:
        return db.execute(f"SELECT 1 FROM jobs WHERE id = ? AND {_RUNNING_UNDER_CLAIM}",
                          (run.job_id, run.attempt, run.started_at)).fetchone() is not None

    def finish(
        self,
        run: RunClaim,
        now: float,
        expire_at: float,
        summary: JobSummary | None = None,
        error: JobError | None = None,
    ) -> bool:
        state = JobState.FAILED if error is not None else JobState.SUCCEEDED
        # A success knows its frames: the estimate made as the video opened gives way to them.
        total = "frames_total" if error is not None else "frames_done"
        with self._transaction() as db:
            if summary is not None and error is None:
                self._check_every_result_kept(db, run, summary)
            return self._update_running(
                db,
                run,
                f"state = ?, finished_at = ?, expire_at = ?, summary = ?, error = ?, frames_total = {total}",
                (state.value, now, expire_at, records.summary_to_text(summary), records.error_to_text(error)),
            )

    @staticmethod
    def _check_every_result_kept(db: sqlite3.Connection, run: RunClaim, summary: JobSummary) -> None:
        row = db.execute(f"SELECT frames_done FROM jobs WHERE id = ? AND {_RUNNING_UNDER_CLAIM}",
                         (run.job_id, run.attempt, run.started_at)).fetchone()
        if row is not None and row["frames_done"] != summary.frames_processed:
            raise StoredResultsLost(f"job {run.job_id}: {row['frames_done']} results stored of the "
                                    f"{summary.frames_processed} its run processed")

    # --- maintenance ----------------------------------------------------------------------

    def recover(
        self, now: float, max_attempts: int, expire_at: float, lost_hand_overs: LostHandOvers | None = None
    ) -> list[Job]:
        """At the first call, every RUNNING job was interrupted by the previous process's end;
        later calls find nothing, since this process hands its jobs to its own workers (none is
        lost but with the process, and the first call hands every QUEUED job over again)."""
        if self._recovered:
            return []
        self._recovered = True
        failed_ids: list[str] = []
        with self._transaction() as db:
            interrupted = db.execute("SELECT id, attempt FROM jobs WHERE state = 'RUNNING'").fetchall()
            for row in interrupted:
                db.execute("DELETE FROM frames WHERE job_id = ?", (row["id"],))
                if row["attempt"] >= max_attempts:
                    failed_ids.append(row["id"])
                    message = MAX_ATTEMPTS_ERROR.format(attempts=row["attempt"])
                    given_up = JobError("INTERNAL", "JOB_INTERRUPTED", message)
                    self._update(
                        db, row["id"], "state = 'FAILED', finished_at = ?, expire_at = ?, error = ?, frames_done = 0",
                        (now, expire_at, records.error_to_text(given_up)),
                    )
                else:
                    self._update(
                        db, row["id"],
                        "state = 'QUEUED', attempt = attempt + 1, frames_done = 0, frames_total = 0, video_info = NULL",
                        (),
                    )
            queued = db.execute("SELECT * FROM jobs WHERE state = 'QUEUED' ORDER BY id").fetchall()
        self._deletion.delete_orphan_frames()
        return [_job_from_row(row) for row in queued] + [self.get(job_id) for job_id in failed_ids]

    def purge_expired(self, now: float, keep: Collection[str] = ()) -> list[Job]:
        self._deletion.delete_frames_left_behind()
        with self._lock:
            rows = [row for row in self._connection.execute(
                f"SELECT * FROM jobs WHERE expire_at <= ? AND state IN ({', '.join('?' * len(_FINISHED_STATES))})",
                (now, *_FINISHED_STATES),
            ).fetchall() if row["id"] not in keep]
        purged = set(self._deletion.delete_expired_jobs([row["id"] for row in rows], now))
        self.erase_deleted_data()
        return [_job_from_row(row) for row in rows if row["id"] in purged]

    def erase_deleted_data(self) -> None:
        """Checkpoint and truncate the log once deletions committed (`DeletedDataErasure`); never
        raises, a checkpoint the store cannot make now being tried again at the next call."""
        self._erasure.erase_log()

    # --- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error, a full disk raised as DiskFull."""
        with self._lock, _disk_full_as_error():
            self._connection.execute("BEGIN IMMEDIATE")
            self._uncommitted_changes.clear()
            try:
                yield self._connection
                self._connection.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk among them).
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            finally:
                changes, self._uncommitted_changes = self._uncommitted_changes, []
            # Told once committed: a revision published for a change rolled back would stay ahead
            # of the database's, and every watch of the job would re-read it without waiting (as
            # long as a full disk fails each write, each watch would spin).
            for job_id, revision in changes:
                self._changes.changed(job_id, revision)

    def _note_deleted(self, job_ids: Iterable[str]) -> None:
        """Within a transaction: the watches of these jobs are woken once it commits."""
        self._uncommitted_changes.extend((job_id, None) for job_id in job_ids)

    def _query_one(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._connection.execute(sql, parameters).fetchone()
            return row

    def _update_running(
        self, db: sqlite3.Connection, run: RunClaim, assignments: str, parameters: tuple[Any, ...]
    ) -> bool:
        return self._update(
            db, run.job_id, assignments, parameters, condition=_RUNNING_UNDER_CLAIM,
            condition_parameters=(run.attempt, run.started_at),
        )

    def _update(
        self,
        db: sqlite3.Connection,
        job_id: str,
        assignments: str,
        parameters: tuple[Any, ...],
        *,
        condition: str = "1",
        condition_parameters: tuple[Any, ...] = (),
    ) -> bool:
        """Apply one change to a job and raise its revision; False when `condition` did not hold."""
        row = db.execute(
            f"UPDATE jobs SET {assignments}, revision = revision + 1 WHERE id = ? AND {condition} RETURNING revision",
            (*parameters, job_id, *condition_parameters),
        ).fetchone()
        if row is None:
            return False
        self._uncommitted_changes.append((job_id, row[0]))
        return True


def _job_from_row(row: sqlite3.Row) -> Job:
    return records.job_from_mapping(dict(zip(row.keys(), row, strict=True)))


@contextlib.contextmanager
def _disk_full_as_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
            raise DiskFull(
                "no space left on the data directory's disk to store job data",
                ErrorDetails(metadata={"store": "sqlite"}),
            ) from error
        raise
