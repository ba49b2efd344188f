"""FFmpeg's messages in a decoder process, passed on to its stderr and watched for a failed conversion.

OpenCV 4.13 and 4.14 convert decoded frames to BGR with FFmpeg 8's swscale, which refuses
interlaced frames ("Cannot convert interlaced to progressive frames"): OpenCV still reports
the frame as read, and hands over a black image. Nothing in OpenCV's API says so; FFmpeg's
log does, on the process's stderr. In a decoder process, which decodes one file and nothing
else, stderr goes through a pipe read by `DecoderLogWatch`: every line still reaches the
server's stderr, and the run can fail with a clear error instead of returning black frames.
Each passed-on line takes the shape of the server's own lines (JSON or text), with the time
and the run's request id, so that it can be told which run it belongs to.

FFmpeg writes there only with OpenCV's default logging: OPENCV_FFMPEG_LOGLEVEL or
OPENCV_FFMPEG_DEBUG in the environment (an operator quieting FFmpeg, a program that rendered
a video in the same process before) make OpenCV print FFmpeg's messages to stdout, buffered,
or not at all, and interlaced videos would then come back black. A decoder process drops both
variables before it opens its file, so it always sees FFmpeg's errors, and passes them on.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from videodag_service.observability.logging import current_request_id, json_line, json_lines_configured, text_line

INTERLACED_REFUSED = b"Cannot convert interlaced to progressive frames"
SCALING_FAILED = b"Failed initializing scaling graph"
"""swscale's refusal to convert a frame for any other cause (its threads, with the process at
its pids limit: "Resource temporarily unavailable"): OpenCV hands over a black image then too."""
CODEC_NOT_OPENED = b"Could not open codec"
"""OpenCV's line when FFmpeg would not open the decoder, with FFmpeg's error number: -11 (no
thread could be started) and -12 (no memory) are the server's trouble, not the file's."""
_THREAD_NAME = "videodag-decoder-log"
_LONGEST_LINE = 64 * 1024
_LONGEST_PASSED_ON = 512
"""Bytes of a message passed on: escaped as JSON, a line of it stays under a pipe's 4 KB page,
written whole whenever the pipe has room. FFmpeg's messages are a line of a hundred or so."""
# OpenCV's variables that take FFmpeg's messages off stderr (see the module's docstring).
OPENCV_FFMPEG_LOG_VARIABLES = ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG")
LOGGER_NAME = "videodag_service.video.decoder"
"""The logger a decoder's passed-on lines name, in JSON logs."""


@dataclass(frozen=True)
class DecoderLogFormat:
    """How the server logs, for the lines its decoder passes on: JSON objects when the server
    writes JSON lines, so that its log stays one object a line, or its text lines otherwise."""

    json_lines: bool = False
    request_id: str | None = None

    @classmethod
    def of_this_process(cls) -> DecoderLogFormat:
        """The format the server's logging uses now, with the request id of the call at hand."""
        return cls(json_lines_configured(), current_request_id())


class DecoderLogWatch:
    """Owns this process's stderr from `install()` on; use in a decoder process only.

    A thread passes the lines on as they come; the decoder also calls `drain()` after each
    frame it converts. Both read under one lock, so once `drain()` returns, every byte
    written to stderr before the call has been read and looked at: a refusal FFmpeg printed
    while converting a frame is known before that frame goes out.
    """

    def __init__(self, read_end: int, passed_to: int, log_format: DecoderLogFormat | None = None) -> None:
        self._read_end = read_end
        self._passed_to = passed_to
        self._format = log_format or DecoderLogFormat()
        self._lock = threading.Lock()
        self._pending = b""
        self._ended = False
        self._dropped = 0
        self._room: select.poll | None = select.poll()
        try:
            self._room.register(passed_to, select.POLLOUT)
        except (OSError, ValueError):
            self._room = None
        self.interlaced_refused = threading.Event()
        """Set once FFmpeg has refused to convert an interlaced frame."""
        self.scaling_failed: str | None = None
        """swscale's first refusal to convert a frame for another cause (`SCALING_FAILED`)."""
        self.codec_not_opened: str | None = None
        """OpenCV's line saying FFmpeg would not open the decoder (`CODEC_NOT_OPENED`)."""
        self._partial_kept = False
        self._muted: Callable[[], bool] = lambda: False
        os.set_blocking(read_end, False)
        threading.Thread(target=self._forward, name=_THREAD_NAME, daemon=True).start()

    @classmethod
    def install(cls, log_format: DecoderLogFormat | None = None) -> DecoderLogWatch:
        """Put a pipe in place of stderr (file descriptor 2, where FFmpeg writes) and start reading
        it; FFmpeg's errors go there from now on (OpenCV reads its variables as it opens its first
        video, which this process has not done yet)."""
        for variable in OPENCV_FFMPEG_LOG_VARIABLES:
            os.environ.pop(variable, None)
        passed_to = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            return cls(read_end, passed_to, log_format)
        except BaseException:
            # No thread to read it (a pids limit): stderr is given back, or what the process then
            # writes there, its error first, would fill a pipe nobody reads.
            os.dup2(passed_to, 2)
            os.close(passed_to)
            os.close(read_end)
            raise

    def use_format(self, log_format: DecoderLogFormat) -> None:
        """Write the lines passed on from now on in this format: a process started ahead of
        its call learns the call's request id only once it is given its file."""
        with self._lock:
            self._format = log_format

    def mute_once(self, muted: Callable[[], bool]) -> None:
        """Pass no line on once `muted()` (an upload cut short, `GrowingUpload.cut_short`): FFmpeg
        then reads the end of a file its client's cancel cut, and its complaints ("partial file",
        "Invalid NAL unit size", a hundred in a run) read as a damaged video when none was. Lines
        are still looked at."""
        self._muted = muted

    def drain(self) -> None:
        """Read, look at and pass on everything written to stderr so far, without waiting for more."""
        with self._lock:
            while not self._ended:
                try:
                    chunk = os.read(self._read_end, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    self._ended = True
                    break
                self._take(chunk)
            # What is written so far of a line still being written counts too.
            self._look_at(self._pending, complete=False)

    def _forward(self) -> None:
        """Read the pipe for the life of the process: a pipe nobody drains would stall the
        decoder at FFmpeg's next message, so passing a line on may fail, reading may not."""
        poller = select.poll()
        poller.register(self._read_end, select.POLLIN)
        while not self._ended:
            poller.poll()
            self.drain()

    def _take(self, chunk: bytes) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > _LONGEST_LINE:
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            self._look_at(line, complete=True)
            if line.strip() and not self._muted():
                self._pass_on(self._formatted(line) + b"\n")

    def _look_at(self, line: bytes, *, complete: bool) -> None:
        """Note what FFmpeg's line says of frames it could not convert, or a decoder it could not
        open. A line still being written counts at once; the first whole one is kept."""
        if INTERLACED_REFUSED in line:
            self.interlaced_refused.set()
        elif SCALING_FAILED in line and (self.scaling_failed is None or self._partial_kept):
            self.scaling_failed = _shown(line)
            self._partial_kept = not complete
        elif CODEC_NOT_OPENED in line and self.codec_not_opened is None and complete:
            self.codec_not_opened = _shown(line)

    def _pass_on(self, data: bytes) -> None:
        """Write all of `data` if stderr has room for it now; dropped, and counted, if not.

        A stderr nobody reads (a log collector fallen behind) must not stall the decoder,
        which drains its messages after every frame: its run would fail for want of
        progress, the video blamed. A line (`_formatted` keeps it under a pipe's page) goes
        out in one write once the pipe has room; the count of lines dropped goes first."""
        if not self._has_room():
            self._dropped += 1
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._write_all(self._formatted(f"{dropped} decoder log lines were dropped: stderr was not being "
                                            "read".encode()) + b"\n")
            if not self._has_room():
                return
        self._write_all(data)

    def _has_room(self) -> bool:
        if self._room is None:
            return True
        try:
            return bool(self._room.poll(0))
        except OSError:
            return False

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._passed_to, view)
            except BlockingIOError:  # a stderr shared with a collector that made it non-blocking
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[written:]

    def _formatted(self, line: bytes) -> bytes:
        if len(line) > _LONGEST_PASSED_ON:
            line = line[:_LONGEST_PASSED_ON] + b"..."
        text = line.decode(errors="replace").strip()
        if not self._format.json_lines:
            return text_line(f"{text} (decoder process {os.getpid()})", logger=LOGGER_NAME,
                             request_id=self._format.request_id).encode()
        return json_line(text, logger=LOGGER_NAME, request_id=self._format.request_id, decoder_pid=os.getpid()).encode()


def _shown(line: bytes) -> str:
    """FFmpeg's line as an error quotes it: text, without OpenCV's or swscale's address prefix."""
    text = line.decode("utf-8", errors="replace").strip()
    return text[text.index("]") + 1:].strip() if text.startswith("[") and "]" in text else text
