"""Chunks written and hashed in a thread: same bytes and hash, bounded memory, errors delivered."""

from __future__ import annotations

import hashlib
import io
import threading

import pytest

from videodag_service.video.chunk_writer import WRITER_THREAD_NAME, ChunkWriter


class GatedFile(io.BytesIO):
    """A file whose writes wait for the test to open the gate: a disk slower than the network."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.final_value = b""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.gate.wait(30)
        return super().write(data)

    def close(self) -> None:
        self.final_value = self.getvalue()
        super().close()


def _writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WRITER_THREAD_NAME]


def test_the_file_and_the_hash_are_those_of_the_chunks_in_order() -> None:
    file = GatedFile()
    file.gate.set()
    writer = ChunkWriter(file, capacity_bytes=10)
    chunks = [bytes([index]) * (index * 7 + 1) for index in range(40)]
    for chunk in chunks[:20]:
        writer.write(chunk)
    writer.write(bytearray(chunks[20]))
    writer.write(memoryview(chunks[21]))
    for chunk in chunks[22:]:
        writer.write(chunk)
    assert writer.close() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert file.final_value == b"".join(chunks)
    assert _writer_threads() == []


class RecordingFile(io.BytesIO):
    """Keeps every object it is asked to write, to tell a queued copy from the caller's own buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[object] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written.append(data)
        return super().write(data)


def test_a_view_of_bytes_is_queued_as_is_and_a_buffer_the_caller_may_change_is_copied() -> None:
    file = RecordingFile()
    writer = ChunkWriter(file)
    received = b"\x12\x03abc"
    view = memoryview(received)[2:]  # as `chunk_views` hands a chunk over
    reusable = bytearray(b"def")
    writer.write(view)
    writer.write(reusable)
    reusable[:] = b"xyz"  # the caller reuses its buffer before the thread writes it
    writer.write(memoryview(bytearray(b"ghi")))
    assert writer.close() == hashlib.sha256(b"abcdefghi").hexdigest()
    assert file.written[0] is view
    assert all(isinstance(data, bytes) for data in file.written[1:])
    assert b"".join(bytes(data) for data in file.written) == b"abcdefghi"


def test_a_slow_disk_holds_the_writer_back_at_the_capacity() -> None:
    file = GatedFile()
    writer = ChunkWriter(file, capacity_bytes=100)
    writer.write(b"a" * 60)  # being written: the thread waits at the gate
    writer.write(b"b" * 60)  # one chunk always fits, however full
    blocked = threading.Thread(target=writer.write, args=(b"c" * 10,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a write past the capacity must wait for the disk"
    file.gate.set()
    blocked.join(10)
    assert not blocked.is_alive()
    writer.flush()
    assert file.getvalue() == b"a" * 60 + b"b" * 60 + b"c" * 10
    writer.close()


def test_an_error_of_the_thread_is_raised_by_the_next_call() -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise OSError(28, "No space left on device")

    writer = ChunkWriter(FullDisk())
    writer.write(b"x")
    with pytest.raises(OSError, match="No space left"):
        writer.flush()
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert _writer_threads() == []


def test_discard_drops_what_waits_and_ends_the_thread() -> None:
    file = GatedFile()
    writer = ChunkWriter(file, capacity_bytes=1000)
    writer.write(b"first")
    writer.write(b"never written")
    stopper = threading.Thread(target=writer.discard)
    stopper.start()
    file.gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert file.final_value in (b"", b"first")
    assert _writer_threads() == []
