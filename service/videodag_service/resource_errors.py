"""The process running short of threads, processes, memory or file descriptors, as an error.

A container's pids, memory or open-files limit shows as whatever Python or FFmpeg raises at
the point it was hit (a RuntimeError from `threading`, an OSError's errno, a codec that did
not open). Every layer that meets one (the calls' status, a job's recorded error, a decoder
process) turns it into the same retryable ServerOutOfResources here, rather than INTERNAL
or the video's fault.
"""

from __future__ import annotations

import errno

from videodag_service.errors import ErrorDetails, ServerOutOfResources

RESOURCE_RETRY_SECONDS = 2.0
_RESOURCE_ERRNOS = {errno.EMFILE: "open files", errno.ENFILE: "open files", errno.ENOMEM: "memory",
                    errno.EAGAIN: "processes or threads"}


def out_of_resources(error: BaseException) -> ServerOutOfResources | None:
    """`error` as ServerOutOfResources when it says the process ran short of threads, processes,
    memory or file descriptors; None for any other error."""
    if isinstance(error, ServerOutOfResources):
        return error
    if isinstance(error, RuntimeError) and "can't start new thread" in str(error):
        short_of = "threads"
    elif isinstance(error, MemoryError):
        short_of = "memory"
    elif isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:  # EAGAIN: a fork at the pids limit
        short_of = _RESOURCE_ERRNOS[error.errno]
    else:
        return None
    return resources_exhausted(short_of, f"{type(error).__name__}: {error}")


def resources_exhausted(short_of: str, cause: str) -> ServerOutOfResources:
    """The error for a call the server could not give `short_of` (threads, memory, ...)."""
    return ServerOutOfResources(
        f"the server ran out of {short_of} for this call ({cause}); retry shortly, or with fewer calls at once",
        ErrorDetails(metadata={"short_of": short_of}, retry_after_seconds=RESOURCE_RETRY_SECONDS),
    )
