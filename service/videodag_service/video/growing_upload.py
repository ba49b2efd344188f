"""Read an upload's temp file while it is still arriving, so decoding starts before the upload ends.

FFmpeg is handed the file as a stream whose reads wait for bytes that have not arrived
yet, and it reads the container as it would read the stored file: the same bytes, in the
same order, with the same result. How early the first frame comes depends only on where
the container keeps what FFmpeg reads when it opens the file. Measured on FFmpeg-written
files:

* MP4/MOV written with "faststart" (index at the front), Matroska/WebM: the file opens
  from its first few percent, and each frame is decoded as soon as its bytes are in;
* fragmented MP4: the same in a decoder process, where FFmpeg is told not to walk every
  fragment header at open (`capture.open_fragments_as_they_arrive`); in-process (thread
  isolation) it waits like the next ones;
* MP4/MOV with the index at the end (most cameras' and encoders' default), MPEG-TS (it
  reads the last packets for the duration) and AVI (its index is at the end): the file
  opens only once the upload is nearly complete, which is no slower than storing it first.

The total size must be known from the start: FFmpeg asks for it when it opens the file,
and told a size other than the real one it looks past the end of an MP4's media data. The
client's declared size gives it.

A reader waiting for bytes stops, and reports the end of the file, once the upload is
abandoned (a failed or cancelled upload sets `abandoned`); the run then ends with the
upload's own error. The signal is a pipe (`AbandonPipe`), so a decoder process can wait
on it as well as a thread can.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from videodag_service.video.decoder_context import decoder_context

# How often a reader that has caught up with the upload looks for new bytes: small next
# to a frame's decode time, and a wait wakes a process that has nothing else to do.
_POLL_SECONDS = 0.005


class AbandonSignal(Protocol):
    """The upload's abandon event (a multiprocessing Event; a threading Event will do in-process)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class GrowingUpload(os.PathLike[str]):
    """An upload that is still being written to `path` and will be `size_bytes` long.

    It is a path-like, so a video opener that only needs the path gets the path; `open_video`
    reads it through `GrowingFileReader` instead. `on_wait` is called while a reader waits
    for bytes (a decoder process reports progress from it); it stays in the process that set
    it and is not sent to a decoder process.
    """

    path: Path
    size_bytes: int
    abandoned: AbandonSignal
    on_wait: Callable[[], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ValueError(f"size_bytes must be positive, got {self.size_bytes}")

    def __fspath__(self) -> str:
        return str(self.path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (GrowingUpload, (self.path, self.size_bytes, self.abandoned))

    def cut_short(self) -> bool:
        """Whether the upload ended before all its bytes came (the signal is set at its end either
        way): what a reader reads from here on is a file cut short by the upload's failure."""
        if not self.abandoned.is_set():
            return False
        try:
            return self.path.stat().st_size < self.size_bytes
        except OSError:  # removed with its failed run
            return True

    def waiting_with(self, on_wait: Callable[[], None]) -> GrowingUpload:
        """The same upload, calling `on_wait` while a reader waits for bytes."""
        return GrowingUpload(self.path, self.size_bytes, self.abandoned, on_wait)


class AbandonPipe:
    """An `AbandonSignal` a decoder process can be given when it starts, and a thread can wait on.

    A one-way pipe whose writing end, once closed, is the signal: the reading end then polls
    readable for good. A multiprocessing Event would do as much with five named semaphores in
    /dev/shm, left there until the garbage collector finds the Event: minutes after a failed
    run whose error holds it in a cycle. A pipe is two descriptors, closed with the upload
    (`close`); a decoder process gets its own copy of the reading end when it starts.
    """

    def __init__(self, reader: Connection, writer: Connection | None = None) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = threading.Lock()

    @classmethod
    def new(cls) -> AbandonPipe:
        reader, writer = decoder_context().Pipe(duplex=False)
        return cls(reader, writer)

    def set(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        try:
            return self._reader.poll(timeout)
        except OSError:  # closed: the upload is over
            return True

    def close(self) -> None:
        """Set the signal and close this process's ends; a reader that asks afterwards sees it set."""
        self.set()
        self._reader.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Only the reading end goes to a decoder process, which waits and never sets.
        return (AbandonPipe, (self._reader,))


def new_abandon_signal() -> AbandonPipe:
    """An abandon signal for a new upload; `close()` it when the upload is over."""
    return AbandonPipe.new()


class GrowingFileReader(io.BufferedIOBase):
    """A seekable, read-only stream over a `GrowingUpload` whose reads wait for the bytes.

    A read returns as many of the requested bytes as have arrived (at least one), waiting
    while none has; at the declared end, or once the upload is abandoned, it returns b"".
    The end-relative seek FFmpeg uses to learn the size answers from the declared size.
    A seek past the bytes that have arrived is allowed: the next read waits for them.
    """

    def __init__(self, upload: GrowingUpload) -> None:
        super().__init__()
        self._upload = upload
        self._file = open(upload.path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._upload.size_bytes + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        end = self._upload.size_bytes
        if self._position >= end:
            return b""
        available = self._wait_for_bytes()
        if available <= self._position:
            return b""  # abandoned
        wanted = available - self._position if size is None or size < 0 else min(size, available - self._position)
        data = os.pread(self._file.fileno(), wanted, self._position)
        self._position += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()

    def _wait_for_bytes(self) -> int:
        """How many bytes the file holds, once it holds more than the read position; the
        position itself if the upload is abandoned first."""
        upload = self._upload
        while True:
            if upload.abandoned.is_set():
                return self._position
            available = min(os.fstat(self._file.fileno()).st_size, upload.size_bytes)
            if available > self._position:
                return available
            if upload.on_wait is not None:
                upload.on_wait()
            upload.abandoned.wait(_POLL_SECONDS)
