"""Store an upload in a thread of its own, so a run can decode the bytes already in.

`BackgroundUpload`, as a `with` block, runs a thread (`videodag-upload`) that writes the chunks to the
receiver as they arrive and finishes it; the caller decodes `growing` meanwhile and asks
`check()` between frames and `wait()` at the end. An upload that fails (too large, a size
or checksum mismatch, a cancelled call) sets the abandon event, so a reader waiting for
bytes stops at once, and `check()` / `wait()` raise the upload's error: the run ends with
that error, not with the truncated file's.

With an idle limit, a watchdog thread gives the upload up once no chunk has arrived for that
long (`upload_idle.WatchedChunks`): an `UploadIdle` error, reported as any other.

When the block exits before the upload has ended (the run failed), the thread is told to
stop: it writes nothing more and ends with its next chunk, or when the call ends, since a
thread waiting for a client's next message cannot be interrupted. The receiver's file is
closed and removed by its own block, after this one.
"""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Iterator
from types import TracebackType

from videodag_service.upload_idle import WatchedChunks
from videodag_service.video.growing_upload import GrowingUpload, new_abandon_signal
from videodag_service.video.upload import StoredUpload, UploadReceiver

UPLOAD_THREAD_NAME = "videodag-upload"
IDLE_WATCH_THREAD_NAME = "videodag-upload-idle-watch"
# How long leaving the block waits for a thread still storing: long enough for the write in
# progress, not for a client's next chunk.
_EXIT_WAIT_SECONDS = 0.5


class BackgroundUpload:
    """Writes `chunks` to `receiver` in a thread while the `with` block decodes `growing`.

    The receiver must have a declared size: a reader of the growing file needs its end.
    """

    def __init__(
        self, receiver: UploadReceiver, chunks: Iterator[bytes | memoryview], idle_seconds: float = 0.0, *,
        min_bytes_per_second: float = 0.0,
    ) -> None:
        """`idle_seconds`: the longest the client may send nothing (or, with `min_bytes_per_second`,
        less than that rate asks); 0 for no limit."""
        if receiver.declared_size is None:
            raise ValueError("an upload decoded while it arrives needs a declared size")
        self._abandon = new_abandon_signal()
        self.growing = GrowingUpload(receiver.path, receiver.declared_size, self._abandon)
        self._receiver = receiver
        self._watched = (WatchedChunks(chunks, idle_seconds, min_bytes_per_second=min_bytes_per_second)
                         if idle_seconds > 0 else None)
        self._chunks = chunks if self._watched is None else self._watched
        self._lock = threading.Lock()  # held while writing, so stop() never closes the file mid-write
        self._stopped = False
        self._done = threading.Event()
        self._stored: StoredUpload | None = None
        self._error: BaseException | None = None
        # The call's context goes along: what the threads log keeps the call's request id.
        self._context = contextvars.copy_context()
        self._thread = threading.Thread(target=self._context.run, args=(self._store,), name=UPLOAD_THREAD_NAME,
                                        daemon=True)

    def check(self) -> StoredUpload | None:
        """The stored upload once complete, None while it arrives; raises the upload's error."""
        if not self._done.is_set():
            return None
        if self._error is not None:
            raise self._error
        return self._stored

    def wait(self) -> StoredUpload:
        """Wait for the rest of the upload; raises its error."""
        self._done.wait()
        stored = self.check()
        assert stored is not None
        return stored

    def __enter__(self) -> BackgroundUpload:
        try:
            self._thread.start()
            if self._watched is not None:
                threading.Thread(target=self._context.copy().run, args=(self._watch_idle, self._watched),
                                 name=IDLE_WATCH_THREAD_NAME, daemon=True).start()
        except BaseException:  # no thread to be had: __exit__ will not run, and the signal's pipe must not wait for it
            self._abandon.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._stopped = True
        self._abandon.set()
        self._done.wait(_EXIT_WAIT_SECONDS)
        # The run that read the upload has ended: a decoder process has its own copy of the signal.
        self._abandon.close()

    def _watch_idle(self, watched: WatchedChunks[bytes | memoryview]) -> None:
        """Ends with the upload, or gives it up once it has sent nothing for its idle limit."""
        while not self._done.wait(_wait_seconds(watched.seconds_left())):
            if watched.seconds_left() <= 0:
                self._fail(watched.expire())
                return

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
        self._done.set()  # before the abandon: a reader that sees it ends the run, which asks check()
        self.growing.abandoned.set()

    def _store(self) -> None:
        try:
            for chunk in self._chunks:
                with self._lock:
                    if self._stopped:
                        return
                    self._receiver.write(chunk)
                    self._receiver.flush()
            with self._lock:
                if self._stopped:
                    return
                self._stored = self._receiver.finish()
        except BaseException as error:  # reported to the run through check() and wait()
            self._fail(error)
        finally:
            self._done.set()


def _wait_seconds(left: float) -> float | None:
    """How long to wait for the upload's end: None (as long as it takes) once the stream has ended."""
    return None if math.isinf(left) else max(left, 0.0)
