"""A ring's shared memory is backed when it is made: a run short of room fails there, typed, not in its decoder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

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


def test_a_shared_memory_filesystem_too_small_for_the_runs_at_once_is_told_in_numbers(tmp_path: Path) -> None:
    """Each 1080p run's ring: two frames of 1920x1080 BGR from a 16 MiB budget (the server's)."""
    stats = os.statvfs(tmp_path)
    size = stats.f_blocks * stats.f_frsize
    ring = 2 * 1920 * 1080 * 3
    runs = size // ring + 1

    said = frame_ring.shared_memory_shortfall(runs, 16 * 1024 * 1024, directory=str(tmp_path))

    assert said == (f"{tmp_path} holds {size / 2**20:.0f} MiB, and {runs} runs at once of 1080p video need "
                    f"{runs * ring / 2**20:.0f} MiB of it for their decoded frames: runs that find it full fail "
                    "RESOURCE_EXHAUSTED; give the server more shared memory (docker run --shm-size 256m), or fewer "
                    "runs at once")
    assert frame_ring.shared_memory_shortfall(runs - 1, 16 * 1024 * 1024, directory=str(tmp_path)) is None
    assert frame_ring.shared_memory_shortfall(1, 16 * 1024 * 1024, directory=str(tmp_path / "none")) is None
