"""FFmpeg's messages in a decoder process, passed on to its stderr and watched for a failed conversion.

OpenCV 4.13 and 4.14 convert decoded frames to BGR with FFmpeg 8's swscale, which refuses
interlaced frames ("Cannot convert interlaced to progressive frames"): OpenCV still reports
the frame as read, and hands over a black image. Nothing in OpenCV's API says so; FFmpeg's
log does, on the process's stderr. In a decoder process, which decodes one file and nothing
else, stderr goes through a pipe read by `DecoderLogWatch`: every line still reaches the
server's stderr, and the run can fail with a clear error instead of returning black frames.
When the server writes JSON lines, each passed-on line is one too.
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from dataclasses import dataclass

from videodag_service.observability.logging import current_request_id, json_line, json_lines_configured

INTERLACED_REFUSED = b"Cannot convert interlaced to progressive frames"
_SETTLED = b"\x00videodag: log read up to here"
_THREAD_NAME = "videodag-decoder-log"
_LONGEST_LINE = 64 * 1024
LOGGER_NAME = "videodag_service.video.decoder"
"""The logger a decoder's passed-on lines name, in JSON logs."""


@dataclass(frozen=True)
class DecoderLogFormat:
    """How the server logs, for the lines its decoder passes on: JSON objects (with the run's
    request id) when the server writes JSON lines, so that its log stays one object a line."""

    json_lines: bool = False
    request_id: str | None = None

    @classmethod
    def of_this_process(cls) -> DecoderLogFormat:
        """The format the server's logging uses now, with the request id of the call at hand."""
        return cls(json_lines_configured(), current_request_id())


class DecoderLogWatch:
    """Owns this process's stderr from `install()` on; use in a decoder process only."""

    def __init__(self, read_end: int, passed_to: int, log_format: DecoderLogFormat = DecoderLogFormat()) -> None:
        self._read_end = read_end
        self._passed_to = passed_to
        self._format = log_format
        self._settled = threading.Event()
        self.interlaced_refused = threading.Event()
        """Set once FFmpeg has refused to convert an interlaced frame."""
        threading.Thread(target=self._forward, name=_THREAD_NAME, daemon=True).start()

    @classmethod
    def install(cls, log_format: DecoderLogFormat = DecoderLogFormat()) -> DecoderLogWatch:
        """Put a pipe in place of stderr (file descriptor 2, where FFmpeg writes) and start reading it."""
        passed_to = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        return cls(read_end, passed_to, log_format)

    def settle(self, timeout_seconds: float = 1.0) -> None:
        """Return once every message written before this call has been read (a marker sent
        through the same pipe has come out of it), so `interlaced_refused` covers them."""
        self._settled.clear()
        os.write(2, _SETTLED + b"\n")
        self._settled.wait(timeout_seconds)

    def _forward(self) -> None:
        """Read the pipe for the life of the process: a pipe nobody drains would stall the
        decoder at FFmpeg's next message, so passing a line on may fail, reading may not."""
        pending = b""
        while chunk := os.read(self._read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > _LONGEST_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                if line == _SETTLED:
                    self._settled.set()
                    continue
                if INTERLACED_REFUSED in line:
                    self.interlaced_refused.set()
                with suppress(OSError):
                    os.write(self._passed_to, self._formatted(line) + b"\n")

    def _formatted(self, line: bytes) -> bytes:
        if not self._format.json_lines:
            return line
        text = line.decode(errors="replace").strip()
        return json_line(text, logger=LOGGER_NAME, request_id=self._format.request_id, decoder_pid=os.getpid()).encode()
