"""Decoded frames between the decoder process and the server: a ring of shared-memory slots.

Pixels never go through a pipe: the decoder converts each kept frame straight into a free
slot (OpenCV writes in place when the slot has the frame's shape) and sends only the slot
number; the server lends the slot's pixels to the pipeline as they are and hands the slot
back once no view of it is left (see `lent_slots`). Measured on 2 cores,
decoding the 720p H.264 benchmark clip in a child process: frames through this ring 551 fps
at 0.36 ms of server CPU a frame; raw bytes through the pipe 367 fps at 1.39 ms; pickled
arrays through the pipe 175 fps at 1.87 ms (768x576: 612, 583 and 390 fps).

Its pages are backed when it is made (`_reserve`): a ring that does not fit in /dev/shm is
DiskFull (RESOURCE_EXHAUSTED, with the `--shm-size` hint) at the start of its run.

The segment has a name only until the decoder has mapped it: the server then unlinks it, so
from there on nothing is left in /dev/shm whatever happens to either process; before that,
the server unlinks it on every exit path and multiprocessing's resource tracker would after
a crash of the server itself.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import sys
import threading
import weakref
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from videodag_service.disk_space import MIB, free_bytes
from videodag_service.errors import DiskFull, ErrorDetails, StorageUnwritable

SEGMENT_PREFIX = "videodag-frames-"
# Two slots let the decoder fill one while the server copies the other. On 2 cores 2, 3, 4
# and 8 slots measured the same (frame_stats_v1, 720p and 768x576); a few absorb a pipeline
# whose time per frame varies. Capped at 4 because the ring lives in /dev/shm, which a
# container gets only 64 MB of unless told otherwise: 11 MB per 720p run, 50 MB for 4K.
MIN_SLOTS = 2
MAX_SLOTS = 4
_SHARED_MEMORY_DIR = "/dev/shm"


@dataclass(frozen=True)
class RingLayout:
    """How a ring is cut: `slots` slots of `slot_bytes` each (one BGR frame of the declared size)."""

    slots: int
    slot_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.slots * self.slot_bytes


def plan_ring(width: int, height: int, budget_bytes: int) -> RingLayout:
    """As many whole frames as the budget holds, but at least MIN_SLOTS and at most MAX_SLOTS."""
    slot_bytes = max(1, width * height * 3)
    slots = min(MAX_SLOTS, max(MIN_SLOTS, budget_bytes // slot_bytes))
    return RingLayout(slots, slot_bytes)


class FrameRing:
    """A shared-memory segment cut into equal frame slots; create it in the server, attach in the decoder."""

    def __init__(self, segment: shared_memory.SharedMemory, layout: RingLayout, *, owner: bool) -> None:
        self.layout = layout
        self._segment = segment
        self._unlinked = not owner
        self._bases: list[np.ndarray | None] = [None] * layout.slots

    @classmethod
    def create(cls, layout: RingLayout) -> FrameRing:
        """A new private segment; raises DiskFull when the shared-memory filesystem has no room for it.

        A full tmpfs would otherwise fail later and worse: the decoder would die of SIGBUS on
        the first write to a page that cannot be backed, and the file would be blamed.
        """
        _check_room(layout.total_bytes)
        name = SEGMENT_PREFIX + secrets.token_hex(6)  # short: macOS allows 31 characters
        try:
            segment = shared_memory.SharedMemory(name, create=True, size=layout.total_bytes)
        except OSError as error:  # no /dev/shm, or a read-only one (a container's): the operator's to fix
            if error.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS):
                raise _unusable(error) from error
            raise
        try:
            _reserve(segment.name, layout.total_bytes)
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        return cls(segment, layout, owner=True)

    @classmethod
    def attach(cls, name: str, layout: RingLayout) -> FrameRing:
        segment = shared_memory.SharedMemory(name)
        if segment.size < layout.total_bytes:
            segment.close()
            raise ValueError(f"segment {name!r} holds {segment.size} bytes, the layout needs {layout.total_bytes}")
        return cls(segment, layout, owner=False)

    @property
    def name(self) -> str:
        return self._segment.name

    def slot_array(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """A view of the slot's first bytes as a uint8 image of `shape`; valid while the ring is open."""
        size = math.prod(shape)  # np.prod takes 5 us, once a frame
        if size > self.layout.slot_bytes:
            raise ValueError(f"a frame of shape {shape} does not fit in a slot of {self.layout.slot_bytes} bytes")
        return self.slot_base(slot)[:size].reshape(shape)

    def slot_base(self, slot: int) -> np.ndarray:
        """The whole slot as a flat uint8 array, made once: every view of the slot (`slot_array`)
        keeps it as its `base`, so its reference count tells whether one is alive (`is_viewed`)."""
        if not 0 <= slot < self.layout.slots:
            raise ValueError(f"slot {slot} is outside the ring of {self.layout.slots}")
        base = self._bases[slot]
        if base is None:
            buffer = self._segment.buf
            assert buffer is not None
            # frombuffer, not ndarray(buffer=...): its array holds an export of the buffer,
            # which is what stops `close` from unmapping pages a view still points into.
            base = np.frombuffer(buffer, dtype=np.uint8, count=self.layout.slot_bytes,
                                 offset=slot * self.layout.slot_bytes)
            self._bases[slot] = base
        return base

    def is_viewed(self, slot: int) -> bool:
        """Whether a view of the slot is alive outside the ring."""
        if self._bases[slot] is None:
            return False
        # One reference is the list's, one getrefcount's argument: more means a view is alive.
        return sys.getrefcount(self._bases[slot]) > 2

    def copy_out(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """The server's own copy of a slot's frame, so the slot can be reused at once."""
        return self.slot_array(slot, shape).copy()

    def unlink(self) -> None:
        """Remove the name (the mappings stay valid); once is enough, later calls do nothing."""
        if not self._unlinked:
            self._unlinked = True
            self._segment.unlink()

    def close(self) -> None:
        """Unmap, and unlink if this side created the segment and has not yet.

        A view of a slot still alive (a node thread abandoned past its time limit, a failed
        run's traceback holding its frame) keeps the mapping until it goes: unmapping under
        it would crash the process at its next read. Such a segment lingers, and is unmapped
        as soon as the last view of it is gone; the name, which is what could leak, is gone
        already.
        """
        try:
            self.unlink()
        finally:
            # The ring lets go of its slots' arrays: those no view holds go now, with their
            # buffer exports. Each export left is watched, and goes after its array's last view.
            exports = [weakref.ref(base.base) for base in self._bases if base is not None]
            self._bases = [None] * self.layout.slots
            try:
                self._segment.close()
            except BufferError:
                with _lingering_lock:
                    _lingering.append(self._segment)
                for export in exports:
                    if (alive := export()) is not None:
                        weakref.finalize(alive, _close_unviewed_segments)
                        del alive
                _close_unviewed_segments()  # in case the last view went while the watch was set


_lingering: list[shared_memory.SharedMemory] = []
"""Closed rings some view still points into; each is unmapped once none does."""
_lingering_lock = threading.RLock()  # a finalizer may run inside _close_unviewed_segments


def _close_unviewed_segments() -> None:
    """Unmap the closed rings no view points into any more (the last view's going does it)."""
    with _lingering_lock:
        for segment in list(_lingering):
            try:
                segment.close()
            except BufferError:
                continue
            if segment in _lingering:
                _lingering.remove(segment)


def lingering_rings() -> int:
    """How many closed rings a view still keeps mapped (for tests and leak checks)."""
    with _lingering_lock:
        return len(_lingering)


def _reserve(name: str, size: int) -> None:
    """Back every page of the new segment now: a segment is created sparse, so rings of runs
    started together could each pass `_check_room` and then run out of room while decoding (a
    decoder killed by SIGBUS, the video blamed). Raises DiskFull when the room is not there.
    Where the filesystem cannot reserve (not Linux's tmpfs), the segment stays as it is."""
    path = os.path.join(_SHARED_MEMORY_DIR, name.lstrip("/"))
    if not os.path.exists(path):
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _no_room(size, free_bytes(_SHARED_MEMORY_DIR)) from None
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(descriptor)


def _check_room(size: int) -> None:
    if not os.path.isdir(_SHARED_MEMORY_DIR):
        return
    free = free_bytes(_SHARED_MEMORY_DIR)
    if free < size:
        raise _no_room(size, free)


def shared_memory_problem() -> str | None:
    """Why no frame ring can be made here, or None: a container with no /dev/shm, or a
    read-only one, failed every run (a server refuses to start on it instead). A full one is
    no problem here: runs are refused while it is, with a hint."""
    try:
        FrameRing.create(RingLayout(1, 1)).close()
    except StorageUnwritable as error:
        return str(error)
    except DiskFull:
        pass
    return None


def shared_memory_shortfall(runs: int, budget_bytes: int, directory: str = _SHARED_MEMORY_DIR) -> str | None:
    """What to say at start of a shared-memory filesystem too small for `runs` runs at once of
    1080p video, each ring cut from `budget_bytes`, or None. Docker gives a container 64 MiB:
    six such runs (a server's default four and two jobs) need 71 MiB, and the runs that find it
    full fail, long after a start that said nothing."""
    try:
        stats = os.statvfs(directory)
    except OSError:  # none at all is refused at start (`shared_memory_problem`)
        return None
    size = stats.f_blocks * stats.f_frsize
    needed = runs * plan_ring(1920, 1080, budget_bytes).total_bytes
    if size >= needed:
        return None
    return (f"{directory} holds {size / MIB:.0f} MiB, and {runs} runs at once of 1080p video need {needed / MIB:.0f} "
            f"MiB of it for their decoded frames: runs that find it full fail RESOURCE_EXHAUSTED; give the server "
            f"more shared memory (docker run --shm-size 256m), or fewer runs at once")


def _unusable(error: OSError) -> StorageUnwritable:
    return StorageUnwritable(
        f"decoder processes cannot hand frames over: no shared memory can be made in {_SHARED_MEMORY_DIR} "
        f"({error.strerror or error}); its operator must mount a writable tmpfs there, or have the servers decode "
        "in threads (--decode-isolation thread)",
        ErrorDetails(metadata={"directory": _SHARED_MEMORY_DIR}),
    )


def _no_room(size: int, free: int) -> DiskFull:
    return DiskFull(
        f"no room in shared memory ({_SHARED_MEMORY_DIR}) for {size:,} bytes of decoded frames, "
        f"{free:,} bytes free; give the server more shared memory (docker run --shm-size)",
        ErrorDetails(metadata={"directory": _SHARED_MEMORY_DIR, "needed_bytes": str(size)}),
    )
