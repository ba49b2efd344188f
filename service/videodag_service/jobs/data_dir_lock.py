"""One process's hold on a job data directory, and the files the embedded store keeps there.

One process owns a data directory at a time (an exclusive `flock` on `jobs.lock`): the
embedded backend's recovery assumes every RUNNING job it finds at start was interrupted. The
hold also answers for the files under it: made private, removed again by a start that could
not set them up, and checked to be still the ones opened (a cleaner of /tmp may take them).
Apart from the store, which deals in SQL and job records, not in files and locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videodag_service.disk_space import out_of_inodes
from videodag_service.errors import DiskFull, ErrorDetails

logger = logging.getLogger(__name__)

DATABASE_FILE = "jobs.sqlite3"
LOCK_FILE = "jobs.lock"
STORE_FILES = (DATABASE_FILE, "jobs.sqlite3-wal", "jobs.sqlite3-shm", "jobs.sqlite3-journal", LOCK_FILE)
"""What the store may make in its data directory: the database, SQLite's files beside it, the lock."""


class DataDirectoryInUse(RuntimeError):
    """Raised at start when another process already serves jobs from the same data directory."""


class DataDirectoryLock:
    """The exclusive hold on `data_dir`, taken when made (DataDirectoryInUse if another process
    has it) and kept until `release`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock_file = _lock_exclusively(data_dir / LOCK_FILE)
        self._opened_files: dict[str, tuple[int, int] | None] = {}

    def remember_opened_files(self) -> None:
        """Note the database and the lock as they are once opened, for `kept_in_place` to compare."""
        self._opened_files = {name: _identity(self.data_dir / name) for name in (DATABASE_FILE, LOCK_FILE)}

    def kept_in_place(self) -> str | None:
        """Whether the database and the lock are still the files the store opened (None when they are).

        A cleaner of temporary files (the default data directory is under /tmp), or an operator,
        may remove them while the server runs: SQLite goes on writing into the removed file, so
        every job recorded from then on is lost at the next start, and with the lock gone another
        server can take the data directory. Nothing fails meanwhile: only this check tells. The
        lock file's times are refreshed on the way, so that an age-based cleaner (systemd-tmpfiles
        ages /tmp by its files' times) does not take the lock of a server that runs for weeks.
        """
        moved = [name for name, opened in self._opened_files.items() if _identity(self.data_dir / name) != opened]
        if moved:
            return (f"{' and '.join(moved)} in {self.data_dir} {'were' if len(moved) > 1 else 'was'} removed or "
                    "replaced while the server ran (a cleaner of temporary files?): jobs recorded from now on are "
                    "lost when it restarts, and another server may take the data directory; restart it, with a "
                    "--data-dir no cleaner touches")
        with contextlib.suppress(OSError):
            os.utime(self._lock_file.fileno())
        return None

    def abandon_start(self, error: BaseException, new_database: bool) -> None:
        """A database this start could not set up (a full disk) is left as it was found: a new one
        is removed while the lock keeps others out, and the lock is released. Raises DiskFull for a
        disk out of inodes, told before the removal frees some."""
        out_of_inodes_error = _out_of_inodes(error, self.data_dir)
        if new_database:
            self.remove_store_files()
        self.release()
        if out_of_inodes_error is not None:
            raise out_of_inodes_error from error

    def remove_store_files(self) -> None:
        """Remove the database, SQLite's files beside it and the lock; only while the lock is held."""
        for name in STORE_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def release(self) -> None:
        self._lock_file.close()


def private_file(path: Path) -> Path:
    """`path`, created empty and 0600 if missing (an empty file is an empty SQLite database).

    The database holds every job's results, file names and keys. SQLite creates its -wal and
    -shm files with the database file's mode, so they are private too; an existing file
    keeps its mode.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))  # never through a planted link
    return path


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at `path` as its device and inode, None if there is none."""
    try:
        details = os.stat(path)
    except FileNotFoundError:
        return None
    return details.st_dev, details.st_ino


def _out_of_inodes(error: BaseException, data_dir: Path) -> DiskFull | None:
    """DiskFull for an error of a disk that has bytes free but not one inode left, read before
    the files this start made are removed (which frees some): SQLite says only "unable to open
    database file", the file system "No space left on device"."""
    if not isinstance(error, sqlite3.Error | OSError):
        return None
    try:
        if not out_of_inodes(data_dir):
            return None
    except OSError:
        return None
    return DiskFull("no inode left on the data directory's disk for the job database's files",
                    ErrorDetails(metadata={"store": "sqlite"}))


class SharedDataDirectoryHold:
    """A Redis deployment replica's hold on its data directory, shared with the deployment's other
    replicas (on this machine, or on others through a file system that shares locks), never with
    an embedded server: each side removes the videos of the jobs its own store does not know, so
    either would remove the other's. Taken when made (DataDirectoryInUse while an embedded server
    has the folder), kept until `release`; an embedded server meanwhile is refused its start."""

    def __init__(self, data_dir: Path) -> None:
        self._lock_file: Any = None
        try:
            self._lock_file = _locked(data_dir / LOCK_FILE, fcntl.LOCK_SH, lambda: DataDirectoryInUse(
                f"an embedded server serves jobs from {data_dir}: a Redis deployment's replicas remove the videos "
                "of jobs their Redis does not know, and would remove its videos; give this server another --data-dir"))
        except DataDirectoryInUse:
            raise
        except OSError as error:  # a file system without locks (NFS without its lock service): as before holds
            logger.warning("could not lock the data directory %s (%s): an embedded server started on it would not "
                           "be refused, and would remove this deployment's videos", data_dir, error)

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()


def _lock_exclusively(path: Path) -> Any:
    return _locked(path, fcntl.LOCK_EX, lambda: DataDirectoryInUse(
        f"another process already serves jobs from {path.parent}; give each server its own --data-dir "
        "or use the Redis backend to share jobs between servers"))


def _locked(path: Path, kind: int, in_use: Callable[[], DataDirectoryInUse]) -> Any:
    # Created 0600 like the database; held open until released.
    lock_file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "a+")
    try:
        fcntl.flock(lock_file, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise in_use() from None
    return lock_file
