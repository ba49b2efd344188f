"""Giving memory back to the system once the server has no video work left (glibc's allocator).

glibc keeps what a process frees in its heaps for reuse, and it raises its threshold for
serving large blocks by `mmap` each time such a block is freed: after the first 1080p or 4K
frames, frame-sized buffers come from the heaps and stay there. Overlapping runs then leave a
server that is idle again holding hundreds of MB (840 MB after a load of 1080p and 4K runs and
jobs, against 78 MB at start). When the last run or job in progress ends, `malloc_trim(0)`
returns the free pages (milliseconds; the runs themselves keep the allocator's reuse).

Fewer allocator arenas would keep less still (`MALLOC_ARENA_MAX=2` leaves 236 MB idle after four
1080p and 4K runs at once, against 366 MB with the trim alone), but they cost the server's
threads throughput: in the benchmark, player_tracking_v1 end to end falls from 0.92x to 0.88x
of its slowest stage. That choice is left to the deployment (glibc reads the variable itself).
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

logger = logging.getLogger(__name__)


def _glibc_function(name: str, argtypes: list[type], restype: type) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    function.argtypes = argtypes
    function.restype = restype
    return cast("Callable[..., int]", function)


_malloc_trim = _glibc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_lock = threading.Lock()
_in_progress = 0


@contextmanager
def video_work() -> Iterator[None]:
    """Marks one run or job in progress; when the last one ends, freed memory goes back."""
    global _in_progress
    with _lock:
        _in_progress += 1
    try:
        yield
    finally:
        with _lock:
            _in_progress -= 1
            idle = _in_progress == 0
        if idle:
            release_freed_memory()


def release_freed_memory() -> None:
    """Return the allocator's free pages to the system (glibc only)."""
    if _malloc_trim is None:
        return
    try:
        _malloc_trim(0)
    except Exception:  # never worth failing a call over
        logger.debug("malloc_trim failed", exc_info=True)

