"""The decoder process: opens one uploaded file, probes it and decodes the sampled frames into the ring.

This module is what runs on the other side of the isolation: a segfault, an abort or an
endless loop in FFmpeg ends this process only, and the server, which holds nothing but a
pipe and the ring, reports it as the run's error. The process is started per run from the
forkserver with this module preloaded, so it starts in milliseconds with OpenCV imported.

The process owns its lifetime only as far as "finish and exit": the server kills it when it
is no longer needed or stops answering, so it ignores SIGINT and SIGTERM (a Ctrl-C or a
`systemctl stop` reaching the whole process group must not fail the runs the server is
still draining), dies with the forkserver (which exits with the server) on Linux, and
writes no core file of a private upload.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time
from collections import deque
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from videodag_service.errors import ErrorDetails
from videodag_service.scheduling import run_as_batch
from videodag_service.video import decoder_messages as messages
from videodag_service.video.capture import open_fragments_as_they_arrive
from videodag_service.video.decoder_blame import blamed_on_the_server, frames_not_converted
from videodag_service.video.decoder_log import DecoderLogFormat, DecoderLogWatch
from videodag_service.video.frame_ring import FrameRing
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.reader import DecodedFrame, OpenedVideo, VideoOpener, VideoSource
from videodag_service.video.unreadable import unreadable

_PR_SET_PDEATHSIG = 1
INTERLACED_REASON = (
    "it is interlaced, and this server's OpenCV cannot convert interlaced frames to images (it would hand "
    "over black ones); deinterlace it first, for example with ffmpeg -i IN -vf bwdif OUT"
)
DECODER_OOM_SCORE_ADJ = 1000
"""A decoder's out-of-memory score adjustment (-1000 to 1000; the server keeps its own, 0 as a rule): the
most, so a decoder's score (its size, plus the whole limit for 1000) is above the server's whatever
the server holds. At 800 a decoder's was its size plus 0.8 of the limit, and a server holding more
than that (models, every run's frames) was killed first, with all its calls."""
# Looked up once, in the forkserver that preloads this module, not in every decoder.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class ServerGone(Exception):
    """The server closed its end of the pipe: nobody wants the frames any more."""


class _Channel:
    """The decoder's end of the pipe; every send also counts as a sign of life."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.last_sent = time.monotonic()

    def send(self, message: bytes) -> None:
        try:
            self._connection.send_bytes(message)
        except OSError as error:  # BrokenPipeError and friends
            raise ServerGone from error
        self.last_sent = time.monotonic()

    def send_alive_if_due(self, interval_seconds: float) -> None:
        """A sign of life, unless another message went out within the interval."""
        if time.monotonic() - self.last_sent >= interval_seconds:
            self.send(messages.encode("alive"))

    def receive(self) -> dict[str, Any]:
        try:
            return messages.decode(self._connection.recv_bytes(messages.MAX_MESSAGE_BYTES))
        except (EOFError, OSError) as error:
            raise ServerGone from error


class _SlotWriter:
    """Hands the reader a free slot for each kept frame and announces it once filled.

    The server gives a slot back ("released", with its number) once nothing it holds still
    looks at the frame, which may be out of order when a pipeline keeps a frame a while.
    With every slot in use the decoder waits for a release: the backpressure that keeps the
    ring bounded.
    """

    def __init__(self, ring: FrameRing, channel: _Channel, frame_shape: tuple[int, int, int]) -> None:
        self._ring = ring
        self._channel = channel
        self._frame_shape = frame_shape
        self._free = deque(range(ring.layout.slots))
        self._published: set[int] = set()
        self._slot: int | None = None
        self._buffer: np.ndarray | None = None
        self.waited_seconds = 0.0

    def next_buffer(self) -> np.ndarray:
        """The declared-size view of a free slot; the same one again if the last was never filled."""
        if self._buffer is None:
            self._wait_for_free_slot()
            self._slot = self._free.popleft()
            self._buffer = self._ring.slot_array(self._slot, self._frame_shape)
        return self._buffer

    def publish(self, frame: DecodedFrame, path: Path) -> None:
        buffer = self.next_buffer()
        assert self._slot is not None
        image = frame.image
        if image is not buffer:
            # OpenCV allocated: the frame's shape differs from the declared one (a size change
            # mid-stream). Copy it in if it fits; a frame larger than the declared size is
            # refused, since the limits were checked against that size.
            if image.dtype != np.uint8 or image.ndim != 3 or image.nbytes > self._ring.layout.slot_bytes:
                raise unreadable(path, f"frame {frame.frame_index} {image.shape} is larger than the video declares")
            self._ring.slot_array(self._slot, image.shape)[...] = image
        ready = messages.FrameReady(self._slot, frame.frame_index, frame.timestamp_seconds, tuple(image.shape))
        self._channel.send(messages.frame_ready(ready))
        self._published.add(self._slot)
        self._slot = None
        self._buffer = None

    def _wait_for_free_slot(self) -> None:
        started = time.perf_counter()
        while not self._free:
            slot = messages.released_slot_from(self._channel.receive())
            if slot not in self._published:
                raise messages.MalformedMessage(f"slot {slot} was released but holds no published frame")
            self._published.remove(slot)
            self._free.append(slot)
        self.waited_seconds += time.perf_counter() - started


def serve_decoder(
    connection: Connection, source: VideoSource | None, opener: VideoOpener, heartbeat_seconds: float,
    log_format: DecoderLogFormat,
) -> None:
    """The decoder process's whole life: probe, wait for the request, decode, report, exit.

    With `source` None the process was started before its file was complete and first
    waits for an `open` message naming it. `opener` opens the file (`open_video` in
    production); it is sent by reference, so it must be a module-level function. While it
    waits for the bytes of an upload still arriving, the decoder reports progress every
    `heartbeat_seconds`: a slow upload is not a hung decoder.
    """
    _harden_process()
    run_as_batch()  # before the capture opens, so FFmpeg's threads inherit it
    open_fragments_as_they_arrive()  # this process opens one capture
    channel = _Channel(connection)
    try:
        log = DecoderLogWatch.install(log_format)
    except Exception as error:  # no thread or pipe for FFmpeg's log, at a pids or open-files limit
        with suppress(ServerGone):  # said instead of "ready": the run fails with it, blaming no video
            channel.send(messages.failed(blamed_on_the_server(error, None) or error))
        connection.close()
        return
    try:
        channel.send(messages.encode("ready"))
        if source is None:
            request = messages.open_request_from(channel.receive())
            log.use_format(request.log_format)
            source = request.path
        if isinstance(source, GrowingUpload):
            log.mute_once(source.cut_short)
            source = source.waiting_with(lambda: channel.send_alive_if_due(heartbeat_seconds))
        _decode_one_file(channel, source, opener, log)
    except ServerGone:
        pass
    except Exception as error:  # file errors keep their type; a bug or a resource error is reported too
        log.drain()
        with suppress(ServerGone):
            channel.send(messages.failed(blamed_on_the_server(error, log.codec_not_opened) or error))
    finally:
        log.drain()  # the process ends at once (os._exit): FFmpeg's last words go out first
        connection.close()


def _decode_one_file(channel: _Channel, source: VideoSource, opener: VideoOpener, log: DecoderLogWatch) -> None:
    """Decode the file and report; once the report is out, the process ends without closing the video.

    The server waits for the process to end before the run's summary goes out, and releasing
    the capture (joining FFmpeg's threads, freeing its buffers one by one) and Python's own
    shutdown take about 1 ms of that wait on a quiet machine, 3-5 ms on a busy one; the
    kernel frees it all at once.
    """
    path = Path(source)
    with opener(source) as video:
        channel.send(messages.opened(video.info))
        message = channel.receive()
        if message["type"] != "decode":
            raise messages.MalformedMessage(f"expected a decode request, got {message['type']!r}")
        request = messages.request_from(message)
        ring = FrameRing.attach(request.ring_name, request.layout)
        try:
            channel.send(messages.encode("attached"))
            writer = _SlotWriter(ring, channel, (video.info.height, video.info.width, 3))
            _stream_frames(video, request, writer, channel, path, log)
            decode_seconds = max(0.0, video.decode_seconds - writer.waited_seconds)
        finally:
            # Closed here, not left to the process's end, where the segment could go before
            # the views of it and complain; a view still alive keeps it until it goes.
            ring.close()
        channel.send(messages.finished(messages.DecodeEnding(
            decode_seconds, video.ended_early, video.frames_in_video, video.frames_unreadable)))
        _end_process_now(log)


def _end_process_now(log: DecoderLogWatch) -> NoReturn:
    with suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    log.drain()  # what Python or FFmpeg wrote to stderr is passed on first
    os._exit(0)


def _stream_frames(
    video: OpenedVideo, request: messages.DecodeRequest, writer: _SlotWriter, channel: _Channel, path: Path,
    log: DecoderLogWatch,
) -> None:
    def heartbeat() -> None:
        channel.send_alive_if_due(request.heartbeat_seconds)

    frames = video.frames(request.window, request.limits, retrieve_into=writer.next_buffer, on_grab=heartbeat)
    for frame in frames:
        log.drain()  # what FFmpeg said while converting this frame is known before it goes out
        if log.interlaced_refused.is_set():
            raise unreadable(path, INTERLACED_REASON, ErrorDetails(metadata={"interlaced": "true"}))
        if log.scaling_failed is not None:  # the frame is black
            raise frames_not_converted(path, log.scaling_failed)
        writer.publish(frame, path)


def _harden_process() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Out of memory (a container's limit), the kernel kills a decoder before the server: its
    # run fails DECODER_KILLED and the others go on, where the server, holding the frames of
    # every run, has the largest share and would be killed with all its calls, silently.
    with suppress(OSError, ValueError):  # not Linux
        Path("/proc/self/oom_score_adj").write_text(f"{DECODER_OOM_SCORE_ADJ}\n")
    if _LIBC is not None:
        # Killed with the forkserver, which exits with the server: a decoder stuck in native
        # code would otherwise outlive a server that was itself killed.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
