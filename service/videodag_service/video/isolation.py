"""Decode an untrusted file in a child process, so a decoder crash or hang ends one run, not the server.

`open_isolated_video` starts a decoder process for one file (`decoder_process`), waits for
its probe and yields an `IsolatedVideo`, which looks to the run like an `OpenedVideo`: the
same `info`, `path`, `decode_seconds` and `frames(window, limits)`. Frames arrive through a
shared-memory ring (`frame_ring`) and a pipe of small JSON messages (`decoder_messages`).

What the server sees of a misbehaving decoder:

* it dies (segfault, abort, killed by the OOM killer): `VideoUnreadable` naming the signal,
  INVALID_ARGUMENT to the client;
* it exits by itself before its first message, `ready`, before it could read anything of
  the file: `DecoderDidNotStart`, INTERNAL, since the server is at fault (killed by a signal
  that early, it is a crash like any other). `check_decoders_start`
  makes a server whose decoders cannot start refuse to start instead;
* it goes silent for `frame_timeout_seconds` (no probe, no frame, no sign of progress while
  it grabs frames it skips) or the run has waited for it `run_timeout_seconds` in total:
  the process is killed and `DeadlineExceeded` says so. The run limit counts only the time
  the run waited for its decoder, not the time the pipeline took, so a slow pipeline on a
  long video cannot trip it;
* it reports a file error: the same `VideoUnreadable` / `VideoTooLarge` as in-process.

Whichever way the block exits, the process is dead and reaped and the ring unlinked when it
has exited. Processes come from a preloaded forkserver (`decoder_context`); their exit
status is safe to ask for from any thread (`child_processes`).

A process takes about 7 ms to start (2 cores), a delay every run would add to its first
result. `start_decoder_ahead` starts one before its file is complete, while the upload is
still arriving, and hands it the file's path once it is stored; or hands it a process
started before the call (`spare_decoder`).
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import multiprocessing.util
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from videodag_service.errors import (
    DeadlineExceeded,
    DecoderDidNotStart,
    DecoderKilled,
    ErrorDetails,
    VideodagError,
    VideoUnreadable,
)
from videodag_service.video import decoder_messages as messages
from videodag_service.video.child_processes import guarded_process
from videodag_service.video.decoder_context import decoder_context
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.decoder_process import serve_decoder
from videodag_service.video.frame_ring import FrameRing, plan_ring
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.info import VideoInfo
from videodag_service.video.limits import VideoLimits
from videodag_service.video.reader import DecodedFrame, VideoOpener, VideoSource, open_video, unreadable
from videodag_service.video.sampling import FrameWindow

logger = logging.getLogger(__name__)
T = TypeVar("T")
StartedProcess = tuple[multiprocessing.process.BaseProcess, Connection]
"""A decoder process and the server's end of its pipe."""

DECODER_PROCESS_NAME = "videodag-decoder"
KILL_AT_EXIT_PRIORITY = 10
"""Decoders are killed by finalizers of this priority at exit, before multiprocessing joins its children."""
_STARTER_THREAD_NAME = "videodag-decoder-start"
# How long a decoder that has said it is done, or whose pipe closed, may take to exit, and
# how long a killed one may take to be reaped, before the server stops waiting and logs it.
_EXIT_GRACE_SECONDS = 5.0
# When a caller whose decoder was killed (out of memory) may try again.
_RETRY_AFTER_KILL_SECONDS = 5.0
# Without a frame limit the decoder still reports progress this often while it skips frames.
_DEFAULT_HEARTBEAT_SECONDS = 1.0
# How long the start-up check waits for a first decoder to say it runs (it takes milliseconds).
_START_CHECK_SECONDS = 60.0
GUARD_HINT = (
    "the usual cause is a script that starts the server outside `if __name__ == \"__main__\":`, "
    "since multiprocessing runs the main module again in every decoder process"
)


def start_hint() -> str:
    """Why decoder processes usually fail to start, for this program's main module.

    multiprocessing runs the main module again in every decoder process, from its file:
    a script read from standard input (`python -`) has none, so nothing can fix it but a
    file or decoding in threads; any other main module must guard what starts the server.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main_file, str) and not os.path.isfile(main_file):
        return (
            f"the main module is not a file ({main_file!r}, as for a script read from standard input), and "
            "multiprocessing runs the main module again in every decoder process from its file: save the "
            "script to a file and run that, or decode in threads (decode_isolation=\"thread\")"
        )
    return GUARD_HINT


@dataclass(frozen=True)
class DecoderTimeouts:
    """Time limits on a decoder process; None switches a limit off.

    frame_seconds: longest the decoder may go without a sign of progress (the probe, a
        frame, or a grab while it skips frames).
    run_seconds: longest a run may wait for its decoder in total.
    """

    frame_seconds: float | None = 10.0
    run_seconds: float | None = 6 * 3600.0

    def __post_init__(self) -> None:
        for name in ("frame_seconds", "run_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")

    @property
    def heartbeat_seconds(self) -> float:
        """How often a busy decoder reports progress: well inside the frame limit."""
        return _DEFAULT_HEARTBEAT_SECONDS if self.frame_seconds is None else min(
            _DEFAULT_HEARTBEAT_SECONDS, self.frame_seconds / 4
        )


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
            self, _kill_quietly, args=(process,), exitpriority=KILL_AT_EXIT_PRIORITY
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
            self._receive("ready")
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
        """Stop the decoder (killed unless it has finished), reap it, unlink and unmap the ring."""
        try:
            self._connection.close()  # a decoder waiting on the pipe sees the end and exits
            if not self._finished:
                self._kill()
            self._reap()
            self._kill_at_exit.cancel()
        finally:
            if self._ring is not None:
                self._ring.close()

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

    def _receive(self, *expected: str) -> dict[str, Any]:
        """The next message of an expected type; heartbeats reset the frame limit and are skipped."""
        while True:
            wait, limit_name = self._next_wait()
            started = time.monotonic()
            try:
                ready = self._poller.readable(wait)
            finally:
                self._waited_seconds += time.monotonic() - started
            if not ready:
                raise self._timed_out(limit_name)
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

    def _next_wait(self) -> tuple[float | None, str]:
        frame_limit, run_limit = self._timeouts.frame_seconds, self._timeouts.run_seconds
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

    def _timed_out(self, limit_name: str) -> DeadlineExceeded:
        self._kill()
        if limit_name == "run":
            seconds = self._timeouts.run_seconds
            what = f"decoding took longer than the run's decode time limit of {seconds:g} s"
        else:
            seconds = self._timeouts.frame_seconds
            what = f"the decoder stopped responding: no progress within the frame time limit of {seconds:g} s"
        return DeadlineExceeded(
            f"{what} on {self.path.name!r}; the run was stopped",
            ErrorDetails(metadata={"limit": f"decode_{limit_name}_timeout_seconds", "seconds": f"{seconds:g}"}),
        )

    def _crashed(self) -> VideodagError:
        """The pipe ended without a word: say how the decoder ended, killing it if it lingers."""
        self.ended_without_a_word = True
        self._process.join(_EXIT_GRACE_SECONDS)
        lingered = self._process.exitcode is None  # killed below: its SIGKILL is this server's
        self._kill()
        self._reap()
        code = self._exitcode
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


def reap_decoder(process: multiprocessing.process.BaseProcess) -> int | None:
    """Wait for the process to end and release it; its exit code, None if it would not die.

    Still running after a grace period (normal exit) or SIGKILL (stuck in the kernel): it is
    killed and waited for once more, then no longer, rather than hold the run forever.
    """
    process.join(_EXIT_GRACE_SECONDS)
    if process.exitcode is None:
        process.kill()
        process.join(_EXIT_GRACE_SECONDS)
    exitcode = process.exitcode
    if exitcode is None:
        logger.warning("decoder process %s did not exit after SIGKILL", process.pid)
    else:
        process.close()
    return exitcode


# poll() takes at most 2**31 - 1 ms (24 days); a longer wait raised OverflowError in every run.
_MAX_POLL_SECONDS = (2**31 - 1) / 1000


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


class LentSlots:
    """Frames handed to the caller as views of their ring slot, without a copy.

    A slot goes back to the decoder once no view of it is left: views cut from the slot's
    flat array (`FrameRing.slot_base`) keep that array as their `base`, so its reference
    count says whether anything (the caller, a pipeline node that keeps the previous frame,
    a slice of it) still looks at the slot. A slot is never written while it is lent.

    Lending a frame while the caller keeps all the other slots would leave the decoder no
    slot to decode into: such a frame is copied out and its slot given back at once.
    """

    def __init__(self, ring: FrameRing, release: Callable[[int], None]) -> None:
        self._ring = ring
        self._release = release
        self._lent: set[int] = set()
        self.copies = 0

    def __contains__(self, slot: int) -> bool:
        return slot in self._lent

    def lend(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        if len(self._lent) >= self._ring.layout.slots - 1:
            if self.copies == 0:
                logger.info("the pipeline keeps %d decoded frames: copying frames out of the ring while it does",
                            len(self._lent))
            self.copies += 1
            image = self._ring.copy_out(slot, shape)
            self._release(slot)
            return image
        self._lent.add(slot)
        return self._ring.slot_array(slot, shape)

    def take_back(self) -> None:
        """Give back every lent slot no view of which is left."""
        for slot in sorted(self._lent):
            if not self._ring.is_viewed(slot):
                self._lent.remove(slot)
                self._release(slot)


class StartedDecoder:
    """A decoder process waiting to be told its file; see `start_decoder_ahead`.

    The process is started in a thread of its own: starting one waits 4-7 ms for the
    forkserver to fork it, and the upload that the process is started for is stored
    meanwhile instead of after. With `spare`, a process started earlier (`SpareDecoder`)
    is used instead.
    """

    def __init__(self, opener: VideoOpener, timeouts: DecoderTimeouts, spare: StartedProcess | None = None) -> None:
        self.timeouts = timeouts
        """The limits it was started with (its heartbeat is set at start)."""
        self.opener = opener
        self._started = spare
        self.said_ready = spare is not None
        """Whether the process's `ready` was read already, as a spare's is when it is taken."""
        self._error: BaseException | None = None
        # Made here, in the caller's thread: the decoder's log lines carry the caller's request id.
        self.log_format = DecoderLogFormat.of_this_process()
        self._starting: threading.Thread | None = None
        if spare is None:
            self._starting = threading.Thread(target=self._start, args=(opener,), name=_STARTER_THREAD_NAME,
                                              daemon=True)
            self._starting.start()
        self.taken = False

    def _start(self, opener: VideoOpener) -> None:
        try:
            self._started = start_decoder_process(None, opener, self.timeouts, self.log_format)
        except BaseException as error:  # raised to the run that takes it
            self._error = error

    def raise_if_failed(self) -> None:
        """Raise what starting the process raised, if it has failed already; never waits."""
        if self._error is not None:
            raise self._error

    def wait_started(self) -> multiprocessing.process.BaseProcess:
        """The process, once started; raises what starting it raised."""
        if self._starting is not None:
            self._starting.join()
        if self._error is not None:
            raise self._error
        assert self._started is not None
        return self._started[0]

    def take(self) -> StartedProcess:
        """The process and the server's end of its pipe, for the one run that uses them."""
        if self.taken:
            raise RuntimeError("a decoder started ahead serves one file")
        self.taken = True
        self.wait_started()
        assert self._started is not None
        return self._started

    def discard(self) -> None:
        """Kill and reap the process, unless a run took it (the run then ends it)."""
        if self.taken:
            return
        self.taken = True
        if self._starting is not None:
            self._starting.join()
        if self._started is not None:
            end_decoder(self._started)


@contextmanager
def start_decoder_ahead(
    *, timeouts: DecoderTimeouts | None = None, opener: VideoOpener = open_video, spare: StartedProcess | None = None
) -> Iterator[StartedDecoder]:
    """Start a decoder process now, for a stored file named later (`open_isolated_video(path,
    started=...)`), so the process is ready when the upload is. Until then it waits on its
    pipe and uses no CPU. On exit it is killed and reaped, unless a run took it. With `spare`
    (`SpareDecoder.take()`, started with these timeouts and opener) no process is started.
    """
    started = StartedDecoder(opener, timeouts or DecoderTimeouts(), spare)
    try:
        yield started
    finally:
        started.discard()


@contextmanager
def open_isolated_video(
    source: str | Path | VideoSource,
    *,
    timeouts: DecoderTimeouts | None = None,
    ring_budget_bytes: int = 16 * 1024 * 1024,
    opener: VideoOpener = open_video,
    started: StartedDecoder | None = None,
) -> Iterator[IsolatedVideo]:
    """Start a decoder process for `source` and yield it once it has probed the file.

    Raises what `open_video` raises (VideoUnreadable), plus VideoUnreadable for a decoder
    that crashed and DeadlineExceeded for one that hung. `opener` runs in the decoder
    process; it is sent by reference, so it must be a module-level function. A
    `GrowingUpload` is decoded as its bytes arrive; its abandon event goes to the process.
    With `started`, a stored file goes to that process (`start_decoder_ahead`), which
    brings the timeouts and opener it was started with; a spare among them that ends
    without a word before its probe is replaced once (`_opened_by`).
    """
    path = Path(source)
    if not isinstance(source, GrowingUpload):
        source = path
    if started is None:
        timeouts = timeouts or DecoderTimeouts()
        video = _opened(path, start_decoder_process(source, opener, timeouts), timeouts, ring_budget_bytes)
    elif isinstance(source, GrowingUpload):
        raise ValueError("a decoder started ahead takes a stored file, not an upload still arriving")
    else:
        video = _opened_by(started, path, ring_budget_bytes)
    try:
        yield video
    finally:
        video.close()


def _opened_by(started: StartedDecoder, path: Path, ring_budget_bytes: int) -> IsolatedVideo:
    """The decoder started ahead, once it has probed `path`.

    A spare that ends without a word before its probe is replaced once by a process of the
    run's own: it was taken alive, but a process killed a moment before (the OOM killer)
    still looks alive until its exit has closed its pipe, which takes a few milliseconds on
    a busy machine; that is no fault of the file. A second such end is the file's.
    """
    process, parent_end = started.take()
    with suppress(OSError):  # one that died meanwhile is reported by the wait for its probe
        parent_end.send_bytes(messages.open_file(messages.OpenRequest(path, started.log_format)))
    video = IsolatedVideo(path, process, parent_end, started.timeouts, ring_budget_bytes, started.said_ready)
    try:
        video.wait_until_opened()
        return video
    except VideodagError as error:
        video.close()
        if not (started.said_ready and video.ended_without_a_word):
            raise
        logger.warning("a spare decoder process ended before it opened %r (%s); starting another", path.name, error)
    except BaseException:
        video.close()
        raise
    started_now = start_decoder_process(path, started.opener, started.timeouts, started.log_format)
    return _opened(path, started_now, started.timeouts, ring_budget_bytes)


def _opened(path: Path, started: StartedProcess, timeouts: DecoderTimeouts, ring_budget_bytes: int) -> IsolatedVideo:
    """An IsolatedVideo of the process once it has probed the file; closed if it could not."""
    video = IsolatedVideo(path, *started, timeouts, ring_budget_bytes)
    try:
        video.wait_until_opened()
    except BaseException:
        video.close()
        raise
    return video


@functools.cache
def check_decoders_start() -> None:
    """Start one decoder process and wait for its `ready`, so that a server whose decoders
    cannot start refuses to start, rather than fail every run with an error no video caused.

    Raises RuntimeError with the exit status and the usual cause. The process is given no
    file, so it exits as soon as its pipe closes. Once passed, later calls return at once.
    """
    process, connection = start_decoder_process(None, open_video, DecoderTimeouts())
    try:
        first = _first_message_type(connection)
    finally:
        connection.close()
        exit_status = reap_decoder(process)
    if first is None:
        raise RuntimeError(
            f"decoder processes cannot start: the first one ended (exit status {exit_status}) before it ran, "
            f"with the error printed above; {start_hint()}"
        )
    if first != "ready":
        raise RuntimeError(f"a decoder process began with {first!r} instead of 'ready'")


def _first_message_type(connection: Connection) -> str | None:
    """The type of the first message on the pipe; None if it closed without one."""
    if not connection.poll(_START_CHECK_SECONDS):  # an end of file is readable too
        raise RuntimeError(f"a decoder process did not start within {_START_CHECK_SECONDS:g} s")
    try:
        raw = connection.recv_bytes(messages.MAX_MESSAGE_BYTES)
    except (EOFError, ConnectionError):
        return None
    return str(messages.decode(raw)["type"])

def start_decoder_process(
    source: VideoSource | None, opener: VideoOpener, timeouts: DecoderTimeouts,
    log_format: DecoderLogFormat | None = None, *, name: str = DECODER_PROCESS_NAME,
) -> StartedProcess:
    """A started decoder process (`serve_decoder`) and the server's end of its pipe."""
    context = decoder_context()
    parent_end, child_end = context.Pipe(duplex=True)
    process = guarded_process(
        context,
        target=serve_decoder,
        args=(child_end, source, opener, timeouts.heartbeat_seconds, log_format or DecoderLogFormat.of_this_process()),
        name=name, daemon=True,
    )
    try:
        process.start()
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return process, parent_end


def _kill_quietly(process: multiprocessing.process.BaseProcess) -> None:
    with suppress(ValueError, OSError):  # closed or gone already
        process.kill()


def end_decoder(started: StartedProcess) -> None:
    """Kill and reap a decoder process that serves no run."""
    process, connection = started
    connection.close()
    process.kill()
    reap_decoder(process)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
