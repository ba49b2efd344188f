"""A video decoded by its own process, as the run sees it: the frames, the limits, the ways it fails.

An `IsolatedVideo` looks to the run like an `OpenedVideo`: the same `info`, `path`,
`decode_seconds` and `frames(window, limits)`. Frames arrive through a shared-memory ring
(`frame_ring`, its slots lent without a copy by `lent_slots`) and a pipe of small JSON
messages (`decoder_messages`); the process itself is started and reaped by `decoder_lifecycle`
and handed over by `isolation`, which opens one.

What the server sees of a misbehaving decoder:

* it dies (segfault, abort, killed by the OOM killer): `VideoUnreadable` naming the signal,
  INVALID_ARGUMENT to the client;
* it exits by itself before its first message, `ready`, before it could read anything of
  the file: `DecoderDidNotStart`, INTERNAL, since the server is at fault (killed by a signal
  that early, it is a crash like any other). `decoder_lifecycle.check_decoders_start`
  makes a server whose decoders cannot start refuse to start instead;
* it does not say `ready` within `DECODER_START_SECONDS` (or the frame limit, if longer):
  `DecoderDidNotStart` too. Starting a process is the server's work, not the video's, and on
  a loaded machine it takes seconds: under the frame limit, a short one, it was reported as
  the video's decoder hanging;
* it goes silent for `frame_timeout_seconds` (no probe, no frame, no sign of progress while
  it grabs frames it skips) or the run has waited for it `run_timeout_seconds` in total:
  the process is killed and `DeadlineExceeded` says so. The run limit counts only the time
  the run waited for its decoder, not the time the pipeline took, so a slow pipeline on a
  long video cannot trip it;
* it reports a file error: the same `VideoUnreadable` / `VideoTooLarge` as in-process.

Once closed, the process is dead and reaped and the ring unlinked when it has exited.
"""

from __future__ import annotations

import logging
import math
import multiprocessing.process
import multiprocessing.util
import select
import signal
import time
from collections.abc import Callable, Generator
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from videodag_service.errors import (
    DeadlineExceeded,
    DecoderDidNotStart,
    DecoderKilled,
    ErrorDetails,
    VideodagError,
    VideoUnreadable,
)
from videodag_service.video import decoder_messages as messages
from videodag_service.video.child_processes import ended_with_its_forkserver
from videodag_service.video.decoder_lifecycle import (
    EXIT_GRACE_SECONDS,
    KILL_AT_EXIT_PRIORITY,
    DecoderTimeouts,
    kill_quietly,
    reap_decoder,
    start_hint,
)
from videodag_service.video.frame_ring import FrameRing, plan_ring
from videodag_service.video.info import VideoInfo
from videodag_service.video.lent_slots import LentSlots
from videodag_service.video.limits import VideoLimits
from videodag_service.video.reader import DecodedFrame
from videodag_service.video.sampling import FrameWindow
from videodag_service.video.unreadable import unreadable
from videodag_service.wording import plain_number

logger = logging.getLogger(__name__)
T = TypeVar("T")
# When a caller whose decoder was killed (out of memory) may try again.
_RETRY_AFTER_KILL_SECONDS = 5.0
DECODER_START_SECONDS = 30.0
"""How long a run waits for its decoder process to start (its `ready`), at the least: a spare
taken before it was ready, or a process of its own, on a machine busy enough to take seconds."""
# poll() takes at most 2**31 - 1 ms (24 days); a longer wait would raise OverflowError.
_MAX_POLL_SECONDS = (2**31 - 1) / 1000


class IsolatedVideo:
    """A video being decoded by its own process; use through `open_isolated_video`."""

    def __init__(
        self, path: Path, process: multiprocessing.process.BaseProcess, connection: Connection,
        timeouts: DecoderTimeouts, ring_budget_bytes: int, said_ready: bool = False,
    ) -> None:
        self.path = path
        self._process = process
        self._connection = connection
        self._poller = _Poller(connection)
        self._timeouts = timeouts
        self._ring_budget_bytes = ring_budget_bytes
        self._ring: FrameRing | None = None
        self._waited_seconds = 0.0
        self._started = said_ready
        self._finished = False
        self._reaped = False
        self._exitcode: int | None = None
        self.decode_seconds = 0.0
        """The decoder's own time seeking, decoding and converting; known once it has finished."""
        self.ended_early = False
        """Whether the video ended before the count it declares (`OpenedVideo.ended_early`); known once finished."""
        self.frames_in_video: int | None = None
        """The frames read to the video's end (`OpenedVideo.frames_in_video`); known once finished."""
        self.frames_unreadable = 0
        """Frames decoded past as damaged (`OpenedVideo.frames_unreadable`); known once finished."""
        self.ended_without_a_word = False
        """Whether the process ended, or its pipe closed, without reporting why (a crash, a kill)."""
        self._info: VideoInfo | None = None
        # Killed at the interpreter's exit, before multiprocessing waits for its children: it
        # ignores the SIGTERM multiprocessing sends them first, so a run left unfinished (a frame
        # iterator never closed) would make that wait endless. Also when this object is collected.
        self._kill_at_exit = multiprocessing.util.Finalize(
            self, kill_quietly, args=(process,), exitpriority=KILL_AT_EXIT_PRIORITY
        )

    @property
    def info(self) -> VideoInfo:
        """The decoder's probe of the file (`open_isolated_video` waits for it)."""
        if self._info is None:
            raise RuntimeError("the decoder has not opened the file yet")
        return self._info

    def wait_until_opened(self) -> VideoInfo:
        """Wait for the decoder's probe of the file; raises its error if it could not open it."""
        if not self._started:
            self._receive("ready", starting=True)
            self._started = True
        message = self._receive("opened")
        self._info = self._checked(messages.info_from, message)
        return self._info

    def frames(self, window: FrameWindow, limits: VideoLimits) -> Generator[DecodedFrame, None, None]:
        """Start decoding now and yield the frames the window samples, each the caller's own copy.

        Decoding runs ahead of the caller by as many frames as the ring holds.
        """
        if self._ring is not None or self._info is None:
            raise RuntimeError("frames() may be called once per decoder, after it has opened the file")
        layout = plan_ring(self.info.width, self.info.height, self._ring_budget_bytes)
        self._ring = FrameRing.create(layout)
        request = messages.DecodeRequest(window, limits, self._ring.name, layout, self._timeouts.heartbeat_seconds)
        self._send(messages.decode_request(request))
        return self._frames(self._ring, window, limits)

    def frame_waiting(self) -> bool:
        """Whether the decoder has already sent its next message, so the next frame (or the
        end) can be taken without waiting for it to decode. Almost always that message is a
        frame; a sign of life from a decoder skipping frames counts too, and then the next
        frame is waited for as usual."""
        return self._poller.readable(0)

    def close(self) -> None:
        """Stop the decoder (killed unless it has finished), unlink and unmap the ring, reap the decoder.

        The ring goes first: unmapping it (a few MB, 1-2 ms) then overlaps the kernel's teardown
        of the decoder's memory (4-6 ms), which the reap waits for.
        """
        try:
            self._connection.close()  # a decoder waiting on the pipe sees the end and exits
            if not self._finished:
                self._kill()
        finally:
            try:
                if self._ring is not None:
                    self._ring.close()
            finally:
                self._reap()
                self._kill_at_exit.cancel()

    def _frames(
        self, ring: FrameRing, window: FrameWindow, limits: VideoLimits
    ) -> Generator[DecodedFrame, None, None]:
        self._receive("attached")
        ring.unlink()  # both sides have it mapped: from now on nothing can leak in /dev/shm
        lent = LentSlots(ring, lambda slot: self._send(messages.released(slot)))
        last_index = -1
        while True:
            lent.take_back()
            message = self._receive("frame", "finished")
            if message["type"] == "finished":
                ending = self._checked(messages.finish_from, message)
                self.decode_seconds = ending.decode_seconds
                self.ended_early = ending.ended_early
                self.frames_in_video = ending.frames_in_video
                self.frames_unreadable = ending.frames_unreadable
                self._finished = True
                return
            frame = self._checked(messages.frame_from, message, ring.layout)
            # The decoder checks these too; the server does not take its word for them.
            if (frame.frame_index <= last_index or window.is_before(frame.timestamp_seconds)
                    or window.is_past_end(frame.timestamp_seconds)):
                raise self._malformed(f"frame {frame.frame_index} is out of order or outside the window")
            if frame.slot in lent:
                raise self._malformed(f"slot {frame.slot} was reused while its frame was still lent")
            limits.check_frame(frame.frame_index, frame.timestamp_seconds, self.info.fps)
            last_index = frame.frame_index
            # Not bound to a name: at the next take_back() only the caller may still hold the frame.
            yield DecodedFrame(frame.frame_index, frame.timestamp_seconds, lent.lend(frame.slot, frame.shape))

    def _receive(self, *expected: str, starting: bool = False) -> dict[str, Any]:
        """The next message of an expected type; heartbeats reset the frame limit and are skipped.
        `starting`: the process's first message, awaited up to the start limit instead."""
        while True:
            wait, limit_name = self._next_wait(starting)
            started = time.monotonic()
            try:
                ready = self._poller.readable(wait)
            finally:
                self._waited_seconds += time.monotonic() - started
            if not ready:
                raise self._did_not_start(wait) if starting and limit_name == "frame" else self._timed_out(limit_name)
            try:
                raw = self._connection.recv_bytes(messages.MAX_MESSAGE_BYTES)
            except (EOFError, ConnectionError):  # a reset too: it died with releases unread
                raise self._crashed() from None
            except OSError:
                raise self._malformed(f"a message over {messages.MAX_MESSAGE_BYTES} bytes") from None
            message = self._checked(messages.decode, raw)
            if message["type"] == "alive":
                continue
            if message["type"] == "failed":
                self._finished = True  # it exits by itself after reporting
                raise self._checked(messages.error_from, message)
            if message["type"] not in expected:
                raise self._malformed(f"expected {' or '.join(expected)}, got {message['type']!r}")
            return message

    def _next_wait(self, starting: bool) -> tuple[float | None, str]:
        frame_limit, run_limit = self._timeouts.frame_seconds, self._timeouts.run_seconds
        if starting:
            frame_limit = None if frame_limit is None else max(frame_limit, DECODER_START_SECONDS)
        run_left = None if run_limit is None else max(0.0, run_limit - self._waited_seconds)
        if run_left is not None and (frame_limit is None or run_left < frame_limit):
            return run_left, "run"
        return frame_limit, "frame"

    def _send(self, message: bytes) -> None:
        """Send, ignoring a closed pipe: a decoder that has finished exits while the last frames
        are still being released, and one that died is reported by the next receive."""
        with suppress(OSError):
            self._connection.send_bytes(message)

    def _checked(self, parse: Callable[..., T], *args: Any) -> T:
        """`parse(*args)`, with a malformed message ending the decoder and the run."""
        try:
            return parse(*args)
        except messages.MalformedMessage as error:
            raise self._malformed(str(error)) from None

    def _did_not_start(self, seconds: float | None) -> DecoderDidNotStart:
        assert seconds is not None, "only a start given a time limit runs out of it"
        self._kill()
        logger.error("a decoder process did not start within %g s; %s", seconds, start_hint())
        return DecoderDidNotStart(
            f"the server could not start a decoder for {self.path.name!r} within {plain_number(seconds)} s (too busy, "
            "or its decoders cannot start: its log says which); the video is not to blame"
        )

    def _timed_out(self, limit_name: str) -> DeadlineExceeded:
        self._kill()
        seconds = self._timeouts.run_seconds if limit_name == "run" else self._timeouts.frame_seconds
        assert seconds is not None, "a limit turned off never runs out"
        limit = plain_number(seconds)
        if limit_name == "run":
            what = f"decoding took longer than the run's decode time limit of {limit} s"
        else:
            what = f"the decoder stopped responding: no progress within the frame time limit of {limit} s"
        return DeadlineExceeded(
            f"{what} on {self.path.name!r}; the run was stopped",
            ErrorDetails(metadata={"limit": f"decode_{limit_name}_timeout_seconds", "seconds": limit}),
        )

    def _crashed(self) -> VideodagError:
        """The pipe ended without a word: say how the decoder ended, killing it if it lingers."""
        self.ended_without_a_word = True
        self._process.join(EXIT_GRACE_SECONDS)
        lingered = self._process.exitcode is None  # killed below: its SIGKILL is this server's
        self._kill()
        self._reap()
        code = self._exitcode
        if ended_with_its_forkserver(self._process, code):
            self._finished = True
            logger.warning("the forkserver that starts decoder processes ended, and the decoder of %r with it; "
                           "the next run starts another", self.path.name)
            return DecoderKilled(
                f"the decoder of {self.path.name!r} ended with the process that starts the server's decoders (killed, "
                "or at the server's limit of processes or open files); the video is not to blame: retry shortly",
                ErrorDetails(retry_after_seconds=_RETRY_AFTER_KILL_SECONDS),
            )
        if not self._started and code is not None and code >= 0:  # a signal is a crash, started or not
            self._finished = True
            logger.error("a decoder process ended (exit status %s) before it started; %s", code, start_hint())
            return DecoderDidNotStart(
                f"the server could not start a decoder for {self.path.name!r}: the process ended "
                f"(exit status {code}) before it ran; the server's log says why"
            )
        if code == -signal.SIGKILL and not lingered:
            self._finished = True
            return DecoderKilled(
                f"the decoder of {self.path.name!r} was killed (SIGKILL), most likely by the system's out-of-memory "
                "killer; the video is not to blame: retry shortly, or with fewer runs at once",
                ErrorDetails(retry_after_seconds=_RETRY_AFTER_KILL_SECONDS),
            )
        if code is not None and code < 0:
            reason = f"the decoder crashed (signal {-code}, {_signal_name(-code)})"
        elif code:
            reason = f"the decoder exited with status {code}"
        else:
            reason = "the decoder stopped before finishing"
        self._finished = True
        return unreadable(self.path, reason)

    def _malformed(self, problem: str) -> VideoUnreadable:
        self._kill()
        return unreadable(self.path, f"the decoder sent a malformed message ({problem})")

    def _kill(self) -> None:
        if not self._reaped and self._process.exitcode is None:
            self._process.kill()

    def _reap(self) -> None:
        if self._reaped:
            return
        self._reaped = True
        self._exitcode = reap_decoder(self._process)


class _Poller:
    """Waits for the pipe to be readable with one poll object for the whole run: a frame's wait
    then costs a system call, where `Connection.poll` builds and drops a selector every time."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(connection.fileno(), select.POLLIN)

    def readable(self, wait: float | None) -> bool:
        """True once there is a message to read, or the other end closed (reading then says so)."""
        if wait is not None and wait > _MAX_POLL_SECONDS:  # a limit of years (inf, as "none") is none
            wait = None
        if self._poll is None:
            return self._connection.poll(wait)
        return bool(self._poll.poll(None if wait is None else math.ceil(wait * 1000)))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
