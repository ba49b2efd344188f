"""Where jobs' uploaded videos wait for a worker: `UploadStorage`, and a directory that implements it.

Workers get a reference (a file name), never the bytes. For the Redis backend the directory
must be one every worker can read at the same path (a shared mount); behind the interface
it could later be an object store. A video is kept only while its job is QUEUED or RUNNING,
or, for a while, may be (`stray_videos`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from videodag_service import disk_space
from videodag_service.jobs.disk_reserve import DiskReserve
from videodag_service.jobs.model import StoredVideo
from videodag_service.private_folders import private_directory
from videodag_service.video import receive_upload, storage_errors
from videodag_service.video.upload import checked_declared_size, remove_orphaned_uploads, suffix_for_file_name

_INCOMING = "incoming"
_ABANDONED_UPLOAD_SECONDS = 3600.0


class UploadStorage(Protocol):
    """Stores a job's video under a reference and gives workers a local path to it."""

    def remove_if_empty(self) -> None:
        """Remove what holds the uploads, if it holds nothing (after a failed start)."""

    def store(
        self,
        name: Callable[[], str],
        chunks: Iterable[bytes | memoryview],
        *,
        max_upload_bytes: int,
        declared_size: int | None,
        declared_sha256: str | None,
        file_name: str,
    ) -> StoredVideo:
        """Receive the chunks, check them (limits, size, checksum) and keep the video under a new
        reference; on any error nothing is kept.

        `name()` gives the reference's stem (the job id); it is called once, only after the
        last byte arrived and passed the checks, so a job id that carries the time says when
        the video was stored, not when a slow upload began.
        """
        ...

    def path(self, ref: str) -> Path:
        """A path a worker can open; the file may be gone once its job is finished."""
        ...

    def delete(self, ref: str) -> None:
        """Remove the video; removing one already gone is fine."""
        ...

    def refs(self) -> Iterator[str]:
        """Every stored video's reference, for the removal of those no job needs."""
        ...

    def remove_abandoned_uploads(self) -> int:
        """Remove partial uploads whose sender is gone (a server killed mid-upload); how many."""
        ...


class DirectoryUploadStorage:
    """Videos as files `<root>/<job_id><ext>`; partial uploads in `<root>/incoming/` until checked.

    `min_free_bytes` is the room uploads must leave on the file system, so jobs' results and
    the job records still fit: an upload that would leave less is refused with
    RESOURCE_EXHAUSTED (DISK_FULL) rather than filling the disk. Its declared size, and what
    the other uploads in progress declared and have still to send, count from its start; one
    without a declared size is checked again as it grows (`DiskReserve`). `free_bytes` reads
    the free space (statvfs by default).

    `exclusive`: no other process receives uploads into `root` (the embedded backend, whose
    data directory is locked), so every partial upload found at start is a dead process's
    and is removed. Otherwise (a folder shared by several servers) only partial uploads
    untouched for an hour are.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        min_free_bytes: int = 0,
        *,
        exclusive: bool = False,
        free_bytes: Callable[[Path], int] = disk_space.free_bytes,
    ) -> None:
        self.root = private_directory(Path(root))
        self._reserve = DiskReserve(self.root, min_free_bytes, free_bytes)
        self._incoming = private_directory(self.root / _INCOMING)
        self._clear_incoming(exclusive)

    def remove_if_empty(self) -> None:
        """Remove the uploads folder, and its folder of uploads arriving, if they hold nothing."""
        for folder in (self._incoming, self.root):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def store(
        self,
        name: Callable[[], str],
        chunks: Iterable[bytes | memoryview],
        *,
        max_upload_bytes: int,
        declared_size: int | None,
        declared_sha256: str | None,
        file_name: str,
    ) -> StoredVideo:
        # Over the size limit is what a client must hear first: free space is checked for what is allowed.
        declared = checked_declared_size(declared_size, max_upload_bytes) or 0
        # Made again if gone (a tmp cleaner, a failed start beside this server's), checked as at start.
        with storage_errors(self._incoming):  # one another user made again: STORAGE_UNWRITABLE, no path
            private_directory(self._incoming, "job upload folder")
        suffix = suffix_for_file_name(file_name)
        with self._reserve.claim(declared, max_upload_bytes) as room, receive_upload(
            self._incoming,
            max_upload_bytes=max_upload_bytes,
            declared_size=declared_size,
            declared_sha256=declared_sha256,
            suffix=suffix,
            file_name=file_name,
        ) as upload:
            room.track(upload.path)
            for chunk in chunks:
                if chunk:
                    size = memoryview(chunk).nbytes
                    upload.check_acceptable(size)  # a client's own mistake is what it hears first
                    room.before_writing(size)
                    upload.write(chunk)
            stored = upload.finish()
            ref = name() + suffix
            # Moved inside the block: the receiver's cleanup finds nothing left to delete.
            os.replace(stored.path, self.root / ref)
        return StoredVideo(ref=ref, size_bytes=stored.size_bytes, sha256=stored.sha256)

    def path(self, ref: str) -> Path:
        if Path(ref).name != ref or ref.startswith("."):
            raise ValueError(f"not an upload reference: {ref!r}")
        return self.root / ref

    def delete(self, ref: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(ref).unlink()

    def refs(self) -> Iterator[str]:
        """Every stored reference (for tests and cleanup)."""
        return (entry.name for entry in self.root.iterdir() if entry.is_file())

    def remove_abandoned_uploads(self) -> int:
        """Partial uploads untouched for an hour and held by no process: their server is gone,
        and none restarted to clear them (another replica's, say). An upload still arriving
        keeps its file locked, however long its client pauses (the idle limit may be off)."""
        return len(remove_orphaned_uploads(self._incoming, min_age_seconds=_ABANDONED_UPLOAD_SECONDS))

    def _clear_incoming(self, exclusive: bool) -> None:
        """Partial uploads of a process that died mid-upload belong to no job.

        With the folder to itself, this process is receiving nothing yet: they all go. In a
        shared folder other replicas may be receiving uploads right now: only abandoned ones go
        (`remove_abandoned_uploads`).
        """
        if not exclusive:
            self.remove_abandoned_uploads()
            return
        for entry in self._incoming.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
