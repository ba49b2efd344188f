"""Deleting jobs and their frames from the embedded store, a bounded batch per transaction.

A long job stores 100,000 frames, and a retention pass may find 100,000 small jobs: in one
transaction, either holds the store's lock for seconds, and every call and running job with
it. So a transaction here deletes at most `_FRAMES_DELETED_AT_ONCE` frames or
`_JOBS_DELETED_AT_ONCE` jobs (some tens of ms of the lock each). A job's record goes first and its
frames after it: frames whose job is gone are seen by no one. Those a full disk keeps go at the
next retention pass (`delete_frames_left_behind`), those a stop leaves at the next start
(`delete_orphan_frames`). Each transaction runs through `DeletedDataErasure`, which zeroes
the pages it frees where the disk has room. Apart from the store, which reads and writes one
job at a time.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

from videodag_service.errors import DiskFull
from videodag_service.jobs.sqlite_erasure import DeletedDataErasure

logger = logging.getLogger(__name__)

# What one transaction deletes at most: about 30 ms of the store's lock each. Zeroing the pages
# freed writes each through the log, 0.5 ms a 32 KB result: fewer at once then, or a running
# job's results and every read would wait half a second a batch.
_FRAMES_DELETED_AT_ONCE = 1000
_FRAMES_ZEROED_AT_ONCE = 100
_JOBS_DELETED_AT_ONCE = 200


class BatchedDeletion:
    """Deletes through the store's `transaction` (DiskFull for a full disk), run by `erasure`,
    reads under its `lock`; tells `jobs_deleted` the ids of the jobs each transaction deletes,
    before it commits."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        lock: threading.RLock,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        jobs_deleted: Callable[[Iterable[str]], None],
        erasure: DeletedDataErasure,
    ) -> None:
        self._connection = connection
        self._lock = lock
        self._transaction = transaction
        self._jobs_deleted = jobs_deleted
        self._erasure = erasure
        self._frames_left_behind: set[str] = set()
        """Jobs deleted whose frames could not all be removed yet (`delete_frames_of`)."""

    def delete_frames_of(self, job_ids: Sequence[str]) -> None:
        """Remove the frames of jobs already removed; what a full disk or a busy database keeps
        is left for the next retention pass, the jobs' deletion being done and reported."""
        for start in range(0, len(job_ids), _JOBS_DELETED_AT_ONCE):
            batch = job_ids[start:start + _JOBS_DELETED_AT_ONCE]
            try:
                while True:
                    limit = _FRAMES_ZEROED_AT_ONCE if self._erasure.zeroes_freed_pages() else _FRAMES_DELETED_AT_ONCE
                    if self._erasure.deleting(self._transaction, functools.partial(_delete_some_frames, batch,
                                                                                   limit)) < limit:
                        break
                    time.sleep(0)  # the store's other callers may take its lock before the next batch
            except (DiskFull, sqlite3.OperationalError) as error:
                left = job_ids[start:]
                with self._lock:
                    self._frames_left_behind.update(left)
                logger.warning("the frames of %d deleted job(s) are left for the next retention pass: %s",
                               len(left), error)
                return
            with self._lock:
                self._frames_left_behind.difference_update(batch)

    def delete_frames_left_behind(self) -> None:
        """Try again the frames `delete_frames_of` had to leave."""
        with self._lock:
            left_behind = sorted(self._frames_left_behind)
        if left_behind:
            self.delete_frames_of(left_behind)

    def delete_orphan_frames(self) -> None:
        """Remove the frames of jobs deleted just before the last process ended."""
        with self._lock:
            orphans = [row[0] for row in self._connection.execute(
                "SELECT DISTINCT job_id FROM frames WHERE job_id NOT IN (SELECT id FROM jobs)"
            ).fetchall()]
        self.delete_frames_of(orphans)

    def delete_expired_jobs(self, job_ids: Sequence[str], now: float) -> list[str]:
        """Delete those of `job_ids` whose retention ended by `now`, and their frames; returns the
        ids deleted. A job deleted meanwhile is not among them. A full disk ends the pass with
        what it deleted so far (the others stay for the next pass), or raises DiskFull if nothing."""
        purged: list[str] = []
        for start in range(0, len(job_ids), _JOBS_DELETED_AT_ONCE):
            batch = job_ids[start:start + _JOBS_DELETED_AT_ONCE]
            try:
                gone = self._erasure.deleting(self._transaction,
                                              functools.partial(self._delete_expired_jobs, batch, now))
            except DiskFull:
                if not purged:
                    raise
                break
            self.delete_frames_of(gone)
            purged.extend(gone)
        return purged

    def _delete_expired_jobs(self, job_ids: Sequence[str], now: float, db: sqlite3.Connection) -> list[str]:
        marks = ", ".join("?" * len(job_ids))
        gone = [row[0] for row in db.execute(
            f"DELETE FROM jobs WHERE id IN ({marks}) AND expire_at <= ? RETURNING id", (*job_ids, now)
        ).fetchall()]
        self._jobs_deleted(gone)
        return gone


def _delete_some_frames(job_ids: Sequence[str], limit: int, db: sqlite3.Connection) -> int:
    """Up to `limit` frames of `job_ids`; returns how many went."""
    marks = ", ".join("?" * len(job_ids))
    deleted: int = db.execute(
        f"""DELETE FROM frames WHERE (job_id, frame_index) IN (
              SELECT job_id, frame_index FROM frames WHERE job_id IN ({marks}) LIMIT ?)""",
        (*job_ids, limit),
    ).rowcount
    return deleted
