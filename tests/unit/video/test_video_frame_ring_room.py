"""A ring's shared memory is backed when it is made: a run short of room fails there, typed, not in its decoder."""

from __future__ import annotations

import errno
import os

import pytest

from videodag_service.errors import DiskFull, StorageUnwritable
from videodag_service.video import frame_ring
from videodag_service.video.frame_ring import SEGMENT_PREFIX, FrameRing, RingLayout

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="Linux's shared-memory filesystem only")


def _segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(SEGMENT_PREFIX)}


def test_every_page_of_a_new_ring_is_backed_at_once() -> None:
    """Made sparse, rings of runs started together each passed the free-space check, then the
    decoders died of SIGBUS writing frames the filesystem had no room for, the video blamed."""
    layout = RingLayout(slots=2, slot_bytes=3 * 1024 * 1024)
    ring = FrameRing.create(layout)
    try:
        blocks = os.stat(os.path.join("/dev/shm", ring.name.lstrip("/"))).st_blocks
        assert blocks * 512 >= layout.total_bytes
    finally:
        ring.close()


def test_no_room_for_a_ring_is_disk_full_and_leaves_no_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _segments()
    monkeypatch.setattr(frame_ring.os, "posix_fallocate", full)
    with pytest.raises(DiskFull, match="--shm-size") as raised:
        FrameRing.create(RingLayout(slots=2, slot_bytes=1024 * 1024))
    assert raised.value.details.metadata["needed_bytes"] == str(2 * 1024 * 1024)
    assert _segments() == before


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), "No such file or directory"),  # no /dev/shm
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_no_shared_memory_to_make_a_ring_in_is_the_operators_to_fix(
    monkeypatch: pytest.MonkeyPatch, error: OSError, said: str
) -> None:
    """A container with no /dev/shm, or a read-only one: every run failed INTERNAL "internal
    error: FileNotFoundError", with a traceback in the log, from a server that said it was healthy."""
    def refused(*arguments: object, **keywords: object) -> None:
        raise error

    monkeypatch.setattr(frame_ring.shared_memory, "SharedMemory", refused)
    with pytest.raises(StorageUnwritable) as raised:
        FrameRing.create(RingLayout(slots=2, slot_bytes=1024))
    assert (raised.value.status_code, raised.value.reason) == ("INTERNAL", "STORAGE_UNWRITABLE")
    assert str(raised.value) == (
        f"decoder processes cannot hand frames over: no shared memory can be made in /dev/shm ({said}); its "
        "operator must mount a writable tmpfs there, or have the servers decode in threads (--decode-isolation thread)")
    assert frame_ring.shared_memory_problem() == str(raised.value), "a server refuses to start on it"


def test_shared_memory_with_room_for_a_ring_is_no_problem() -> None:
    before = _segments()
    assert frame_ring.shared_memory_problem() is None
    assert _segments() == before
