"""SubmitJob's free-space reserve against uploads that arrive at once (`DiskReserve`).

Real files in a real uploads folder; only the disk's size is the test's: its free space is a
capacity less the bytes of the files under the folder, read through the same seam production
reads statvfs through, so a full disk is a number, not a mount.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from videodag_service.errors import DiskFull, UploadCorrupted, UploadTooLarge
from videodag_service.jobs import DirectoryUploadStorage, StoredVideo
from videodag_service.jobs.disk_reserve import GROWTH_CLAIM_BYTES, DiskReserve

MIB = 1024 * 1024
CHUNK = 256 * 1024


class SmallDisk:
    """A disk of `capacity` bytes holding only the files under `folder`."""

    def __init__(self, folder: Path, capacity: int) -> None:
        self.folder = folder
        self.capacity = capacity

    def free_bytes(self, _folder: Path) -> int:
        used = sum(path.stat().st_size for path in self.folder.rglob("*") if path.is_file())
        return self.capacity - used


class PausedUpload:
    """An upload in a thread that sends its first chunk, then waits until `resume()`."""

    def __init__(self, storage: DirectoryUploadStorage, name: str, size: int) -> None:
        self.sent_first_chunk = threading.Event()
        self._resume = threading.Event()
        self.stored: StoredVideo | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._upload, args=(storage, name, size))
        self._thread.start()
        assert self.sent_first_chunk.wait(30), "the upload never began"

    def resume(self) -> None:
        self._resume.set()
        self._thread.join(30)

    def _chunks(self, size: int) -> Iterator[bytes]:
        for index, start in enumerate(range(0, size, CHUNK)):
            if index == 1:  # the first chunk was taken: the upload holds its claim
                self.sent_first_chunk.set()
                self._resume.wait(30)
            yield b"v" * min(CHUNK, size - start)

    def _upload(self, storage: DirectoryUploadStorage, name: str, size: int) -> None:
        try:
            self.stored = storage.store(lambda: name, self._chunks(size), max_upload_bytes=1 << 30,
                                        declared_size=size, declared_sha256=None, file_name="clip.mp4")
        except BaseException as error:
            self.error = error
        finally:
            self.sent_first_chunk.set()


def _bytes(size: int) -> Iterator[bytes]:
    return (b"v" * min(CHUNK, size - start) for start in range(0, size, CHUNK))


def test_declared_uploads_in_progress_keep_their_room_first_come_first_served(tmp_path: Path) -> None:
    size, reserve = 4 * MIB, 2 * MIB
    disk = SmallDisk(tmp_path, capacity=reserve + 2 * size + size // 2)  # room for two and a half
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=disk.free_bytes)
    first, second = PausedUpload(storage, "a" * 24, size), PausedUpload(storage, "b" * 24, size)

    # Both have sent one chunk only: the free space alone would let a third in, and all three
    # would then run out of disk (or eat the reserve) as they go on.
    assert disk.free_bytes(tmp_path) - size >= reserve
    with pytest.raises(DiskFull) as refused:
        storage.store(lambda: "c" * 24, _bytes(size), max_upload_bytes=1 << 30, declared_size=size,
                      declared_sha256=None, file_name="clip.mp4")
    first.resume()
    second.resume()

    assert (first.error, second.error) == (None, None)
    assert sorted(storage.refs()) == ["a" * 24 + ".mp4", "b" * 24 + ".mp4"]
    assert disk.free_bytes(tmp_path) >= reserve
    error = refused.value
    assert error.status_code == "RESOURCE_EXHAUSTED" and error.reason == "DISK_FULL"
    assert f"for the upload of {size} bytes" in error.message
    assert "still to come for uploads in progress" in error.message and f"{reserve} must stay free" in error.message
    promised = int(error.details.metadata["promised_bytes"])
    assert 2 * (size - CHUNK) <= promised <= 2 * size  # their rest: all but the chunk each has written
    assert error.details.metadata["min_free_bytes"] == str(reserve)
    assert error.details.metadata["declared_size_bytes"] == str(size)
    # Ended uploads hold no room: what is free now takes a video that fits above the reserve.
    storage.store(lambda: "d" * 24, _bytes(size // 4), max_upload_bytes=1 << 30, declared_size=size // 4,
                  declared_sha256=None, file_name="clip.mp4")


def test_an_upload_of_unknown_size_is_refused_as_it_grows_before_it_eats_the_reserve(tmp_path: Path) -> None:
    reserve, above_reserve = 8 * MIB, 6 * MIB
    disk = SmallDisk(tmp_path, capacity=reserve + above_reserve)
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=disk.free_bytes)

    with pytest.raises(DiskFull) as refused:
        storage.store(lambda: "e" * 24, _bytes(20 * MIB), max_upload_bytes=1 << 30, declared_size=None,
                      declared_sha256=None, file_name="clip.mp4")

    error = refused.value
    received = int(error.details.metadata["received_bytes"])
    # Never into the reserve; and checked at every chunk, not at each step of its claim (4 MiB): it
    # stops at the chunk that would have written into the reserve, or a few before when chunks the
    # writer thread wrote between reading the file's size and the free space count twice.
    assert above_reserve - 4 * CHUNK < received <= above_reserve
    assert f"to go on with the upload after {received} bytes" in error.message
    assert f"{reserve} must stay free" in error.message
    assert list(storage.refs()) == [] and disk.free_bytes(tmp_path) == disk.capacity
    # One that fits in what is left above the reserve is taken.
    storage.store(lambda: "f" * 24, _bytes(MIB), max_upload_bytes=1 << 30, declared_size=None,
                  declared_sha256=None, file_name="clip.mp4")
    assert list(storage.refs()) == ["f" * 24 + ".mp4"]


def test_an_upload_of_unknown_size_counts_what_declared_uploads_still_have_to_send(tmp_path: Path) -> None:
    size, reserve = 8 * MIB, 2 * MIB
    disk = SmallDisk(tmp_path, capacity=reserve + size + 2 * MIB)
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=disk.free_bytes)
    declared = PausedUpload(storage, "g" * 24, size)

    with pytest.raises(DiskFull) as refused:
        storage.store(lambda: "h" * 24, _bytes(5 * MIB), max_upload_bytes=1 << 30, declared_size=None,
                      declared_sha256=None, file_name="clip.mp4")
    declared.resume()

    assert declared.error is None and declared.stored is not None
    assert int(refused.value.details.metadata["promised_bytes"]) > 0
    assert list(storage.refs()) == ["g" * 24 + ".mp4"] and disk.free_bytes(tmp_path) >= reserve


def test_without_a_reserve_nothing_is_checked(tmp_path: Path) -> None:
    disk = SmallDisk(tmp_path, capacity=0)  # said full: with no reserve the disk's own errors are the limit
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=0, free_bytes=disk.free_bytes)
    storage.store(lambda: "i" * 24, _bytes(5 * MIB), max_upload_bytes=1 << 30, declared_size=None,
                  declared_sha256=None, file_name="clip.mp4")
    assert list(storage.refs()) == ["i" * 24 + ".mp4"]


def test_an_upload_of_unknown_size_that_leaves_the_reserve_free_is_taken(tmp_path: Path) -> None:
    """Its claim runs ahead of it by GROWTH_CLAIM_BYTES; refusing it for want of room for that
    step turned away a 1 MB upload from a pipe that a declared one of the same size got through."""
    reserve = 8 * MIB
    disk = SmallDisk(tmp_path, capacity=reserve + GROWTH_CLAIM_BYTES // 2)
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=disk.free_bytes)
    stored = storage.store(lambda: "g" * 24, _bytes(MIB), max_upload_bytes=1 << 30, declared_size=None,
                           declared_sha256=None, file_name="clip.mp4")
    assert stored.size_bytes == MIB


def test_a_clients_own_mistake_is_what_it_hears_on_a_disk_near_its_reserve(tmp_path: Path) -> None:
    """The disk was checked before the upload's own limits: a client sending more than it declared,
    or more than the server takes, was told DISK_FULL, which no retry can get past."""
    reserve = 8 * MIB
    disk = SmallDisk(tmp_path, capacity=reserve + MIB)
    storage = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=disk.free_bytes)
    with pytest.raises(UploadCorrupted, match="size"):
        storage.store(lambda: "h" * 24, _bytes(4 * MIB), max_upload_bytes=1 << 30, declared_size=MIB // 2,
                      declared_sha256=None, file_name="clip.mp4")
    roomy = SmallDisk(tmp_path, capacity=reserve + 3 * MIB + MIB // 2)  # room for all the upload limit lets in
    limited = DirectoryUploadStorage(tmp_path / "uploads", min_free_bytes=reserve, free_bytes=roomy.free_bytes)
    with pytest.raises(UploadTooLarge):
        limited.store(lambda: "i" * 24, _bytes(4 * MIB), max_upload_bytes=3 * MIB, declared_size=None,
                      declared_sha256=None, file_name="clip.mp4")
    assert list(storage.refs()) == []


def test_an_upload_moved_to_its_place_no_longer_counts_as_to_come(tmp_path: Path) -> None:
    """Between the move of a finished upload to its place and the end of its claim, its bytes
    counted twice, on the disk and as still to come: an upload arriving then was refused."""
    free = [100 * MIB]
    reserve = DiskReserve(tmp_path, min_free_bytes=40 * MIB, free_bytes=lambda _folder: free[0])
    with reserve.claim(50 * MIB) as finished:
        free[0] -= 50 * MIB  # its bytes have landed on the disk...
        finished.track(tmp_path / "incoming" / "moved-away.mp4")  # ...and its file was moved to its place
        with reserve.claim(MIB) as arriving:
            assert arriving.declared_bytes == MIB
