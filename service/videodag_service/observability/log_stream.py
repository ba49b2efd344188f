"""A log handler whose writes never hold the code that logs, however slowly stderr is read.

stderr is usually a pipe to a log collector (Docker's, a sidecar's). One that stops reading
(a remote log driver fallen behind, in Docker's default blocking mode) fills the pipe, and a
plain `StreamHandler` then blocks every thread that logs: calls hung until their deadline,
and SIGTERM's drain, which logs, never ended. This handler writes a line at once while the
pipe has room for it, as a plain handler does; otherwise the line waits in a bounded queue
that a thread of its own writes out, blocking alone, and lines beyond the bound are dropped
and counted, with a line saying how many once the reader is back. Lines keep their order.
A stream that is no pipe or socket (a file, a terminal, a StringIO in tests) is written at
once, always.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
from collections import deque
from typing import TextIO

_ATOMIC_BYTES = 4096
"""A pipe with room reports it for a page at least: a longer line could block part way."""
_FLUSH_WAIT_SECONDS = 2.0
"""How long flushing (at exit) waits for the queued lines to be read."""
WRITER_THREAD_NAME = "videodag-log-writer"


class UnblockingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """`logging.StreamHandler` that queues, then drops, rather than block the caller."""

    def __init__(self, stream: TextIO, *, max_waiting_lines: int = 10_000) -> None:
        super().__init__(stream)
        self._max_waiting_lines = max_waiting_lines
        self._waiting: deque[str] = deque()
        self._writing = False
        self._dropped = 0
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._poll = self._pollable(stream)

    @staticmethod
    def _pollable(stream: TextIO) -> select.poll | None:
        """A poll for room on the stream's pipe or socket; None for anything else (a file, a
        terminal, /dev/null, a StringIO), which a write does not hold for long."""
        try:
            descriptor = stream.fileno()
            mode = os.fstat(descriptor).st_mode
        except (AttributeError, OSError, ValueError):
            return None
        if not hasattr(select, "poll") or not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return None
        poll = select.poll()
        poll.register(descriptor, select.POLLOUT)
        return poll

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self._changed:
            if not self._waiting and not self._writing and self._has_room_for(line):
                try:
                    self._write(line)
                except Exception:
                    self.handleError(record)
                return
            if len(self._waiting) >= self._max_waiting_lines:
                self._dropped += 1
                return
            self._waiting.append(line)
            self._start_writer()
            self._changed.notify_all()

    def _has_room_for(self, line: str) -> bool:
        if self._poll is None:
            return True
        if len(line) * 4 > _ATOMIC_BYTES:  # up to 4 bytes a character in UTF-8
            return False
        return bool(self._poll.poll(0))

    def _write(self, line: str) -> None:
        self.stream.write(line)
        self.stream.flush()

    def _start_writer(self) -> None:
        if self._writer is None:
            writer = threading.Thread(target=self._write_waiting, name=WRITER_THREAD_NAME, daemon=True)
            try:
                writer.start()
            except RuntimeError:  # at the threads limit: the next line tries again
                # Meanwhile what waits is written here, as far as the pipe has room for it, so
                # that lines are dropped only when it has none.
                while self._waiting and self._has_room_for(self._waiting[0]):
                    self._write(self._waiting.popleft())
                return
            self._writer = writer

    def _write_waiting(self) -> None:
        """Write the queued lines, then end: the next line that has to wait starts another."""
        while True:
            with self._changed:
                if not self._waiting:
                    self._writer = None
                    self._changed.notify_all()
                    return
                line = self._waiting.popleft()
                self._writing = True
            try:
                self._write(line)
                with self._changed:
                    dropped, self._dropped = (self._dropped, 0) if not self._waiting else (0, self._dropped)
                if dropped:
                    self._write(self._dropped_note(dropped))
            except Exception:  # the reader is gone for good: what waits can go nowhere
                pass
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _dropped_note(self, dropped: int) -> str:
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0,
                                   "%d log lines were dropped: stderr was not being read", (dropped,), None)
        return self.format(record) + self.terminator

    def flush(self) -> None:
        """Wait a little for the queued lines to be read; never for good."""
        with self._changed:
            drained = self._changed.wait_for(lambda: not self._waiting and not self._writing, _FLUSH_WAIT_SECONDS)
        if drained and self._poll is None:
            super().flush()
