"""Receive an uploaded video, chunk by chunk, into a private temp file that never outlives its `with`.

Limits are enforced as the bytes arrive: a declared size over the limit is refused before
the file is created, and the chunk that would cross `max_upload_bytes` is refused before it
is written. Chunks are written and hashed (SHA-256) in a thread of their own while the next
ones arrive (`chunk_writer`), a few MiB at most waiting, so the video is never held in memory.
The file (mode 0600, in a directory created 0700; see `temp_dir_open_to_others` for one
that exists already) is removed when the `with` block exits,
however it exits, so callers must finish decoding inside the block. Until then it is
locked (`flock`), so that only files no live process holds, left by a process that was
killed, are taken for orphans at the next start (`remove_orphaned_uploads`).

Example::

    with receive_upload(temp_dir, max_upload_bytes=512 << 20, declared_size=size) as upload:
        for chunk in chunks:
            upload.write(chunk)
        stored = upload.finish()
        results = service.run_on_file(pipeline_id, stored.path)
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from videodag_service.disk_space import free_bytes, free_inodes
from videodag_service.errors import (
    DiskFull,
    EmptyUpload,
    ErrorDetails,
    FieldViolation,
    InvalidOptions,
    StorageUnwritable,
    UploadCorrupted,
    UploadTooLarge,
)
from videodag_service.private_folders import FolderNotPrivate, mode_open_to_others, private_directory
from videodag_service.video.chunk_writer import ChunkWriter
from videodag_service.video.stored_copies import shown_file_name
from videodag_service.wording import first_fault

logger = logging.getLogger(__name__)

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
UPLOAD_PREFIX = "videodag-upload-"
# Older than this and unlocked, an upload file is an orphan: far longer than the moment
# between a file's creation and its lock, and than any clock step between two servers.
ORPHAN_MIN_AGE_SECONDS = 60.0
_UPLOAD_NAME = re.compile(re.escape(UPLOAD_PREFIX) + r"[a-z0-9_]{8}(\.[A-Za-z0-9]{1,8})")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# The suffix becomes part of a path, and FFmpeg uses it as a hint when probing the format:
# keep it to a plain extension so it can never name another directory.
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
DEFAULT_SUFFIX = ".mp4"


@dataclass(frozen=True)
class StoredUpload:
    """A complete, checked upload: valid only inside the `receive_upload` block."""

    path: Path
    size_bytes: int
    sha256: str


class UploadReceiver:
    """Writes the chunks of one upload; created by `receive_upload`."""

    def __init__(
        self,
        file: BinaryIO,
        lock: int,
        path: Path,
        max_upload_bytes: int,
        declared_size: int | None,
        declared_sha256: str | None,
        file_name: str = "",
    ) -> None:
        self.path = path
        self._file_name = file_name
        self._writer = ChunkWriter(file)
        self._lock = lock
        self._max_upload_bytes = max_upload_bytes
        self._declared_size = declared_size
        self._declared_sha256 = declared_sha256
        self._received_bytes = 0
        self._sha256: str | None = None  # known once finished

    @property
    def received_bytes(self) -> int:
        return self._received_bytes

    @property
    def declared_size(self) -> int | None:
        """The size the client declared, None if it did not."""
        return self._declared_size

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append a chunk; raises UploadTooLarge before writing the chunk that crosses the limit."""
        if self._sha256 is not None:
            raise ValueError("the upload is already finished")
        size = memoryview(chunk).nbytes
        self.check_acceptable(size)
        with storage_errors(self.path.parent):
            self._writer.write(chunk)
        self._received_bytes += size

    def check_acceptable(self, size: int) -> None:
        """Raise what `write` would for `size` more bytes, before writing anything: over the upload
        limit (UploadTooLarge), or past the declared size (UploadCorrupted). A caller checking room
        on the disk first asks this, so that a client's own mistake is what it hears."""
        if self._received_bytes + size > self._max_upload_bytes:
            raise UploadTooLarge(
                f"upload is over the limit of {self._max_upload_bytes} bytes "
                f"({self._received_bytes + size} bytes so far)",
                ErrorDetails(metadata={"max_upload_bytes": str(self._max_upload_bytes)}),
            )
        if self._declared_size is not None and self._received_bytes + size > self._declared_size:
            # Refused at once, not at finish(): a reader of the growing file trusts the declared end.
            raise self._size_mismatch(self._received_bytes + size)

    def flush(self) -> None:
        """Hand what was written so far to the file, so a reader of the growing file sees it."""
        with storage_errors(self.path.parent):
            self._writer.flush()

    def finish(self) -> StoredUpload:
        """Write what is still queued and close the file, then check it against what the client declared."""
        if self._sha256 is None:
            with storage_errors(self.path.parent):
                self._sha256 = self._writer.close()
        sha256 = self._sha256
        if self._received_bytes == 0:
            # Named where the caller named it: a batch's log of failures says which file was empty.
            name = shown_file_name(self._file_name)
            raise EmptyUpload(f"the upload{f' of {name!r}' if name else ''} is empty: no video bytes arrived")
        if self._declared_size is not None and self._received_bytes != self._declared_size:
            raise self._size_mismatch(self._received_bytes)
        if self._declared_sha256 is not None and sha256 != self._declared_sha256:
            raise UploadCorrupted(
                f"upload checksum mismatch: sha256 {self._declared_sha256} declared, {sha256} received",
                ErrorDetails(metadata={"declared_sha256": self._declared_sha256, "received_sha256": sha256}),
            )
        return StoredUpload(self.path, self._received_bytes, sha256)

    def _size_mismatch(self, received_bytes: int) -> UploadCorrupted:
        more = " (at least)" if received_bytes > self._received_bytes else ""
        return UploadCorrupted(
            f"upload size mismatch: {self._declared_size} bytes declared, {received_bytes}{more} received",
            ErrorDetails(
                metadata={"declared_size_bytes": str(self._declared_size),
                          "received_size_bytes": str(received_bytes)}
            ),
        )

    def _discard(self) -> None:
        """Close and delete the file; errors here must not hide the error that got us here.
        The lock goes last: a file that exists unlocked is an orphan to the next start."""
        self._writer.discard()
        try:
            with suppress(FileNotFoundError):
                self.path.unlink()
        finally:
            os.close(self._lock)


@contextmanager
def receive_upload(
    temp_dir: str | os.PathLike[str],
    max_upload_bytes: int,
    declared_size: int | None = None,
    declared_sha256: str | None = None,
    suffix: str = DEFAULT_SUFFIX,
    file_name: str = "",
) -> Iterator[UploadReceiver]:
    """Create a private temp file for one upload and remove it when the block exits.
    `file_name` is the caller's name for the video, for the errors to name it.

    `declared_size` None or 0 means unknown (as in the contract); over the limit it raises
    UploadTooLarge before any file is created. `declared_sha256` is lowercase or uppercase hex.
    Bad declarations raise InvalidOptions; a full disk raises DiskFull.
    """
    if max_upload_bytes <= 0:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    if not _SAFE_SUFFIX.fullmatch(suffix):
        raise ValueError(f"suffix must look like '.mp4', got {suffix!r}")
    size = checked_declared_size(declared_size, max_upload_bytes)
    sha256 = _checked_declared_sha256(declared_sha256)
    path, file, lock = _create_private_file(Path(temp_dir), suffix)
    receiver = UploadReceiver(file, lock, path, max_upload_bytes, size, sha256, file_name)
    try:
        yield receiver
    finally:
        receiver._discard()


def temp_dir_open_to_others(temp_dir: str | os.PathLike[str]) -> str | None:
    """Why an existing upload folder is not private, or None when it is (or does not exist yet).

    A folder the server creates is made 0700. One the operator names that exists already
    keeps its mode: the server must not tighten a shared folder such as /tmp under everyone
    else. Each upload is still a 0600 file with an unguessable name, so others cannot read
    it, but they can see that uploads come and go, and how large they are; worth a warning.
    """
    mode = mode_open_to_others(temp_dir)
    if mode is None:
        return None
    return (
        f"upload folder {os.fspath(temp_dir)} is open to other users (mode {mode:04o}): the uploads in it "
        f"are 0600 files, but others can list them; give the server a folder of its own (chmod 700)"
    )


# Video containers and raw streams whose extension may go on the temp file as a hint to FFmpeg.
# Only these: FFmpeg picks some formats by extension alone, so a text file named .txt would
# decode as frames of "ANSI art" and a .jpg as a one-frame video; under the default suffix it
# goes by the content, and a text file is refused as text.
VIDEO_SUFFIXES = frozenset({
    ".3g2", ".3gp", ".264", ".265", ".asf", ".avi", ".dv", ".f4v", ".flv", ".gif", ".h264", ".h265", ".hevc",
    ".ivf", ".m2t", ".m2ts", ".m4v", ".mjpeg", ".mjpg", ".mkv", ".mov", ".mp4", ".mpe", ".mpeg", ".mpg",
    ".mts", ".mxf", ".nut", ".ogv", ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm", ".wmv", ".y4m",
})


def suffix_for_file_name(file_name: str, default: str = DEFAULT_SUFFIX) -> str:
    """The temp-file suffix for a client's file name: its extension if a video's, else `default`."""
    extension = os.path.splitext(os.path.basename(file_name))[1].lower()
    return extension if extension in VIDEO_SUFFIXES and _SAFE_SUFFIX.fullmatch(extension) else default


def declared_size_violation(declared_size: int | None) -> FieldViolation | None:
    """What is wrong with a declared size, if anything (0 or None: not declared)."""
    if declared_size is not None and declared_size < 0:
        return FieldViolation("declared_size_bytes", f"must not be negative, got {declared_size}")
    return None


# Longer than any file system's names (255 bytes) or paths (4096): a name beyond it is no
# name, and every job returns the name it was submitted with, in every lookup and listing.
MAX_FILE_NAME_CHARS = 1024


def file_name_violation(file_name: str) -> FieldViolation | None:
    """What is wrong with a client's file name, if anything: only its length."""
    if len(file_name) > MAX_FILE_NAME_CHARS:
        return FieldViolation("file_name", f"at most {MAX_FILE_NAME_CHARS} characters, got {len(file_name)}")
    return None


def declared_sha256_violation(declared_sha256: str | None) -> FieldViolation | None:
    """What is wrong with a declared checksum, if anything (empty or None: not declared)."""
    if declared_sha256 and not _SHA256_HEX.fullmatch(declared_sha256.strip().lower()):
        stripped = declared_sha256.strip()
        fault = first_fault(stripped, _HEX_DIGITS, most=64, least=64) if stripped else "got only whitespace"
        return FieldViolation("sha256", f"must be 64 hexadecimal characters, {fault}")
    return None


def checked_declared_size(declared_size: int | None, max_upload_bytes: int) -> int | None:
    """The declared size (None when not declared); InvalidOptions if negative, UploadTooLarge over the limit."""
    if (violation := declared_size_violation(declared_size)) is not None:
        raise InvalidOptions([violation])
    if declared_size is None or declared_size == 0:
        return None
    if declared_size > max_upload_bytes:
        raise UploadTooLarge(
            f"declared upload size {declared_size} bytes is over the limit of {max_upload_bytes} bytes",
            ErrorDetails(metadata={"max_upload_bytes": str(max_upload_bytes),
                                   "declared_size_bytes": str(declared_size)}),
        )
    return declared_size


def _checked_declared_sha256(declared_sha256: str | None) -> str | None:
    if (violation := declared_sha256_violation(declared_sha256)) is not None:
        raise InvalidOptions([violation])
    return declared_sha256.strip().lower() if declared_sha256 else None


def _create_private_file(temp_dir: Path, suffix: str) -> tuple[Path, BinaryIO, int]:
    """The file, opened for writing, and a descriptor holding its lock until the upload ends.

    mkstemp creates the file 0600 whatever the umask; a directory we create is made 0700, and
    one another user could have planted is refused (`private_folders`).
    The lock is on a duplicate of the descriptor, so it outlives the writer's close: `flock`
    holds while any descriptor of the open file remains.
    """
    with storage_errors(temp_dir):
        # Checked for every upload, not only at start: a folder removed while the server runs
        # (a tmp cleaner) could be made again by anyone in /tmp, and would receive the uploads.
        private_directory(temp_dir, "upload folder")
        descriptor, name = tempfile.mkstemp(dir=temp_dir, prefix=UPLOAD_PREFIX, suffix=suffix)
    lock = -1
    try:
        lock = os.dup(descriptor)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        return Path(name), os.fdopen(descriptor, "wb"), lock
    except BaseException:
        os.close(descriptor)
        if lock >= 0:
            os.close(lock)
        os.unlink(name)
        raise


def remove_orphaned_uploads(temp_dir: str | os.PathLike[str], min_age_seconds: float = ORPHAN_MIN_AGE_SECONDS
                            ) -> list[Path]:
    """Delete the uploads in `temp_dir` that no process holds: those of a server that was killed
    (SIGKILL, a crash, a power cut), whose `with` never ran to remove them. Returns them.

    Safe in a folder other servers share: a live upload is locked from its first moment to its
    removal, and a file younger than `min_age_seconds` is left alone all the same, which covers
    the instant between its creation and its lock.
    """
    folder = Path(temp_dir)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for path in folder.glob(f"{UPLOAD_PREFIX}*"):
        if not _named_as_an_upload(path.name):
            continue  # someone else's file, in a folder such as /tmp the server may share
        with suppress(OSError):  # gone meanwhile, or not ours to open: left alone
            if _remove_if_orphaned(path, now - min_age_seconds):
                removed.append(path)
    return removed


def _named_as_an_upload(name: str) -> bool:
    """Exactly the names `_create_private_file` gives: the prefix, mkstemp's 8 characters, a video suffix."""
    match = _UPLOAD_NAME.fullmatch(name)
    return match is not None and match.group(1).lower() in VIDEO_SUFFIXES


def _remove_if_orphaned(path: Path, created_before: float) -> bool:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        details = os.fstat(descriptor)
        if not stat.S_ISREG(details.st_mode) or details.st_mtime > created_before:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live upload
        path.unlink()
        return True
    finally:
        os.close(descriptor)


@contextmanager
def storage_errors(folder: Path) -> Iterator[None]:
    """A full disk, or a folder the server cannot write in or no longer trusts, as the typed
    errors callers get.

    The folder is named in the log, for the operator, and never to the caller: the server's
    paths are private. A full disk is logged as a warning (space comes back), the others as
    errors (someone must fix the folder).
    """
    try:
        yield
    except FolderNotPrivate as error:
        logger.error("cannot store an upload: %s", error)
        raise StorageUnwritable(
            "the server cannot store the upload: its upload folder was replaced by one it does not trust (made "
            "again by another user after a cleaner removed it); its operator must fix that"
        ) from error
    except OSError as error:
        details = ErrorDetails(metadata={"errno": str(error.errno)})
        if error.errno in _DISK_FULL_ERRNOS:
            logger.warning("no space left in %s to store an upload (%s)", folder, _free_space(folder))
            raise DiskFull("no space left to store the upload", details) from error
        if error.errno in _UNWRITABLE_ERRNOS:
            logger.error("cannot store an upload in %s: %s", folder, error.strerror)
            raise StorageUnwritable(
                f"the server cannot store the upload: its upload folder is not writable ({error.strerror}); "
                "its operator must fix that", details,
            ) from error
        raise


def _free_space(folder: Path) -> str:
    try:
        return f"{free_bytes(folder)} bytes and {free_inodes(folder)} inodes free"
    except OSError as error:
        return f"free space unknown: {error.strerror}"
