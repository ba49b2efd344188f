"""Write an upload's chunks to its file, and hash them, in a thread of their own.

Receiving a chunk (gRPC and protobuf, in the call's thread) and storing it (the write and
the SHA-256, which both release the GIL) then overlap instead of adding up. At most
`capacity_bytes` wait for the thread (one chunk always fits, however large), so a slow disk
holds the upload back, through gRPC's flow control, instead of letting chunks pile up in
memory. An error of the thread (a full disk) is raised by the next `write`, `flush` or
`close`, as it would have been by a write in the caller's thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from contextlib import suppress
from typing import BinaryIO

WRITER_THREAD_NAME = "videodag-upload-writer"
# Four 1 MiB chunks, sixteen of 256 KiB: enough to ride out a slow write, small next to a video.
DEFAULT_CAPACITY_BYTES = 4 * 1024 * 1024


class ChunkWriter:
    """Appends chunks to `file` and hashes them in a thread; `close` or `discard` ends it."""

    def __init__(self, file: BinaryIO, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self._file = file
        self._capacity_bytes = capacity_bytes
        self._hash = hashlib.sha256()
        self._pending: deque[bytes | memoryview] = deque()
        self._unwritten_bytes = 0  # queued or being written
        self._stopping = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._write_pending, name=WRITER_THREAD_NAME, daemon=True)
        self._thread.start()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Queue a chunk, waiting while the queue is full; raises the thread's error if it failed."""
        data: bytes | memoryview
        if isinstance(chunk, bytes) or (isinstance(chunk, memoryview) and _view_of_bytes(chunk)):
            data = chunk
        else:
            data = bytes(chunk)  # the caller may reuse its buffer
        with self._changed:
            while self._pending and self._unwritten_bytes + len(data) > self._capacity_bytes and not self._error:
                self._changed.wait()
            self._raise_error()
            self._pending.append(data)
            self._unwritten_bytes += len(data)
            self._changed.notify_all()

    def flush(self) -> None:
        """Wait until every queued chunk is written, then flush the file, so readers see the bytes."""
        with self._changed:
            self._changed.wait_for(lambda: self._unwritten_bytes == 0 or self._error is not None)
            self._raise_error()
        self._file.flush()

    def close(self) -> str:
        """Write what is queued, stop the thread and close the file; returns the SHA-256 (hex)."""
        self._stop(drop_pending=False)
        self._raise_error()
        self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Stop the thread without writing what is queued, and close the file; raises nothing."""
        self._stop(drop_pending=True)
        with suppress(OSError):  # an error here must not hide the one that got us here
            self._file.close()

    def _stop(self, *, drop_pending: bool) -> None:
        with self._changed:
            if drop_pending:
                self._pending.clear()
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _write_pending(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                if not self._pending:
                    return
                data = self._pending.popleft()
                self._changed.notify_all()  # an empty queue admits the next chunk
            try:
                self._file.write(data)
                self._hash.update(data)
            except BaseException as error:  # raised to the caller by its next call
                with self._changed:
                    self._error = error
                    self._pending.clear()
                    self._unwritten_bytes = 0
                    self._changed.notify_all()
                return
            with self._changed:
                self._unwritten_bytes -= len(data)
                self._changed.notify_all()


def _view_of_bytes(view: memoryview) -> bool:
    """A plain read-only view of a bytes object (`chunk_views`): nobody can change it, so no copy is needed."""
    return view.readonly and view.contiguous and view.itemsize == 1 and isinstance(view.obj, bytes)
