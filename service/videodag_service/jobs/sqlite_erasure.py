"""Erasing the bytes deleted jobs leave in the embedded store's files: `DeletedDataErasure`.

A deleted row outlives its DELETE in two places. The write-ahead log keeps the pages that
held it, written when the results were stored, until a checkpoint copies the log into the
database and the log is truncated: SQLite checkpoints by itself only after about 4 MB of later
writes (an idle server: never), and a log it rewinds is overwritten from its start, not
erased. In the database file, `secure_delete=FAST` zeroes a row deleted from a page that stays
in use, but a page the deletion frees whole keeps its content until it is reused (measured,
after a checkpoint: 45% to 75% of a long job's results, the most where results overflow their
row's page).
`secure_delete=ON` zeroes freed pages too, by writing each one through the log: room on the
disk for as many pages as a transaction deletes, on a full disk more than there is.

So a deleting transaction zeroes the pages it frees while the disk has room for it, and, a
full disk refusing it, runs again without: room never stops a deletion. Once deletions
committed, the log is checkpointed and truncated to nothing. A reader holding an older snapshot
(another process reading the database) keeps the checkpoint from completing, and a disk short of
room for the log to grow back keeps the log as it is, so that the next deletion or job end finds
its room: either leaves the erasure to the next maintenance pass.

Apart from the store and from `BatchedDeletion`, which decide which rows go, not what their
bytes leave behind.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from videodag_service import disk_space
from videodag_service.errors import DiskFull
from videodag_service.jobs.sqlite_results_room import LOG_GROWTH_ROOM_BYTES

logger = logging.getLogger(__name__)

_Deleted = TypeVar("_Deleted")

# Zeroing a transaction's freed pages writes each through the log: up to 1,000 results
# (`BatchedDeletion`) of 64 KB, with the disk's margin for the log's own growth left over.
_ZEROING_ROOM_BYTES = 64 * 1024 * 1024 + LOG_GROWTH_ROOM_BYTES


class DeletedDataErasure:
    """Runs the store's deleting transactions and erases what they leave in the log; shares the
    store's `connection` under its `lock`."""

    def __init__(self, connection: sqlite3.Connection, lock: threading.RLock, data_dir: Path) -> None:
        self._connection = connection
        self._lock = lock
        self._data_dir = data_dir
        self._log_holds_deleted_data = False
        """A deletion committed since the log was last truncated."""
        self._failure_reported = False

    def deleting(
        self,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        delete: Callable[[sqlite3.Connection], _Deleted],
    ) -> _Deleted:
        """Run `delete` in one of the store's `transaction`s, zeroing the pages it frees while the
        disk has room for that; DiskFull only when the deletion alone finds no room."""
        with self._lock:
            if self.zeroes_freed_pages():
                try:
                    with self._freed_pages_zeroed():
                        return self._committed(transaction, delete)
                except DiskFull:
                    logger.debug("pages freed by a deletion are left unzeroed: no room on the disk to zero them")
            return self._committed(transaction, delete)

    def zeroes_freed_pages(self) -> bool:
        """Whether a deletion now would zero the pages it frees (the disk has room for it)."""
        return self._has_room(_ZEROING_ROOM_BYTES)

    def erase_log(self) -> None:
        """Checkpoint the log into the database and truncate it, when deletions committed since
        the last time; what a reader or a short disk keeps from it waits for the next call."""
        with self._lock:
            if not self._log_holds_deleted_data:
                return
            if not self._has_room(LOG_GROWTH_ROOM_BYTES):
                self._report_kept("the disk has less free than the log's room to grow back")
                return
            try:
                with self._without_waiting():
                    blocked = self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as error:  # a full disk as the database grows to take the log's pages
                self._report_kept(f"the checkpoint failed: {error}")
                return
            if blocked:
                logger.debug("deleted job data is kept in the job store's log for now: a reader holds an "
                             "older snapshot of the database; tried again at the next maintenance")
                return
            self._log_holds_deleted_data = False
            self._failure_reported = False

    def _committed(
        self,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        delete: Callable[[sqlite3.Connection], _Deleted],
    ) -> _Deleted:
        with transaction() as db:
            deleted = delete(db)
        self._log_holds_deleted_data = True
        return deleted

    @contextlib.contextmanager
    def _freed_pages_zeroed(self) -> Iterator[None]:
        """For the transactions within: the store's other writes free pages too (a result
        growing a page splits it) and need not pay for zeroing them."""
        self._connection.execute("PRAGMA secure_delete=ON")
        try:
            yield
        finally:
            self._connection.execute("PRAGMA secure_delete=FAST")

    @contextlib.contextmanager
    def _without_waiting(self) -> Iterator[None]:
        """A checkpoint that must wait for readers would hold the store for the connection's
        whole busy timeout (30 s): it is tried again later instead."""
        timeout_ms = self._connection.execute("PRAGMA busy_timeout").fetchone()[0]
        self._connection.execute("PRAGMA busy_timeout=0")
        try:
            yield
        finally:
            self._connection.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")

    def _has_room(self, needed_bytes: int) -> bool:
        try:
            return disk_space.free_bytes(self._data_dir) >= needed_bytes
        except OSError:  # the folder unreadable for a moment: as a full disk
            return False

    def _report_kept(self, reason: str) -> None:
        """A warning the first time, then quietly until an erasure succeeds."""
        message = "deleted job data is kept in the job store's log for now (%s); tried again at the next maintenance"
        if self._failure_reported:
            logger.debug(message, reason)
        else:
            logger.warning(message, reason)
            self._failure_reported = True
