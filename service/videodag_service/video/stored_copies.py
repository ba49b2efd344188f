"""Errors about a video the service stored itself (an upload, a job's video), worded for its sender.

The video layer reads a private temp file the service wrote: its random name means nothing
to the caller, and only the service knows the file is its own copy, so that a file gone
missing is the server's trouble rather than the caller's. The servicer and the job executor
wrap their runs in these; a library caller reading its own file needs neither.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from videodag_service.errors import StorageUnreadable, VideodagError, VideoFileMissing, VideoUnreadable


@contextmanager
def naming_the_upload(stored_name: str, file_name: str) -> Iterator[None]:
    """Errors raised inside name the upload as its caller knows it: `file_name` (base name
    only), or 'upload' without one. The video layer reads a private temp file whose random
    name (`stored_name`) would mean nothing to the caller, and says which file to keep
    temp paths private."""
    try:
        yield
    except VideodagError as error:
        shown_name = shown_file_name(file_name) or "upload"
        error.message = error.message.replace(repr(stored_name), repr(shown_name))
        error.logged_message = error.logged_message.replace(repr(stored_name), repr(shown_name))
        error.args = (error.message,)
        raise


@contextmanager
def missing_stored_copy_as_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """A video the service stored itself (an upload, a job's video) that its decoder found gone
    is VideoFileMissing: removed from under the server, no fault of the video. Only the service
    knows a path is its own copy; to a library caller a missing file is its own VideoUnreadable."""
    try:
        yield
    except VideoUnreadable as error:
        if os.path.exists(path) and not readable_by_this_process(path):
            raise StorageUnreadable(
                f"Unable to read video file {os.path.basename(path)!r}: the server may not read its own stored copy "
                "(permission denied: its upload folder holds files of another user, restored as that user?); the "
                "operator's to fix"
            ) from error
        if os.path.exists(path):
            raise
        raise VideoFileMissing(
            f"Unable to read video file {os.path.basename(path)!r}: the server's stored copy is gone, removed "
            "from its folder before it was decoded (a cleaner of temporary files, say); send it again"
        ) from error


def readable_by_this_process(path: str | os.PathLike[str]) -> bool:
    """Whether this process may open `path` for reading (its permissions, for its user)."""
    return os.access(path, os.R_OK)


def shown_file_name(file_name: str, keep: int = 60) -> str:
    """A caller's file name as an error shows it: its base name (paths stay the caller's), a
    long one by its start and its end (where the extension is), so what the error says after
    the name is not lost when the message is cut to its bounds. Empty without a name."""
    name = os.path.basename(file_name)
    return name if len(name) <= 2 * keep else f"{name[:keep]}…{name[-keep:]}"
