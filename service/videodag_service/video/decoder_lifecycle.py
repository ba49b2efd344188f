"""Start, end and reap decoder processes, on the server's side of the pipe.

A decoder process (`decoder_process`, the code that runs in it) is forked from the
preloaded forkserver (`decoder_context`), serves one file, and is ended by the server: by
a SIGKILL where it has not finished, always followed by a reap, so that no process is left
to run on or to linger as a zombie. This module holds only that lifetime, shared by the
runs (`isolated_video`), the decoders started ahead of their file (`isolation`) and the
spare kept for the next run (`spare_decoder`); what a run reads from its decoder is apart.

`check_decoders_start` makes a server whose decoders cannot start refuse to start, and
`start_hint` says the usual cause (a main module that starts the server unguarded, or is
no file at all), since multiprocessing runs the main module again in every decoder.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import os
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from videodag_service.errors import DecoderDidNotStart
from videodag_service.video import decoder_messages as messages
from videodag_service.video.child_processes import guarded_process
from videodag_service.video.decoder_context import decoder_context
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.decoder_process import serve_decoder
from videodag_service.video.reader import VideoOpener, VideoSource, open_video
from videodag_service.wording import plain_number

logger = logging.getLogger(__name__)

# What starting a process raises when its forkserver has ended: refused or gone as it is asked
# (a socket no longer listened to, or removed), or closed before it told the new process's pid.
_FORKSERVER_GONE = (EOFError, ConnectionError, FileNotFoundError)
_FORKSERVER_END_SECONDS = 5.0
_FORKSERVER_END_POLL_SECONDS = 0.05

StartedProcess = tuple[multiprocessing.process.BaseProcess, Connection]
"""A decoder process and the server's end of its pipe."""

DECODER_PROCESS_NAME = "videodag-decoder"
KILL_AT_EXIT_PRIORITY = 10
"""Decoders are killed by finalizers of this priority at exit, before multiprocessing joins its children."""
EXIT_GRACE_SECONDS = 5.0
"""How long a decoder that has said it is done, or whose pipe closed, may take to exit, and how
long a killed one may take to be reaped, before the server stops waiting and logs it."""
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


def start_decoder_process(
    source: VideoSource | None, opener: VideoOpener, timeouts: DecoderTimeouts,
    log_format: DecoderLogFormat | None = None, *, name: str = DECODER_PROCESS_NAME,
) -> StartedProcess:
    """A started decoder process (`serve_decoder`) and the server's end of its pipe.

    A forkserver that ended as it was asked for a decoder (killed, or a fork refused at a pids
    limit) is started again by multiprocessing once it has seen the end: the start is tried a
    second time, once the first has ended, rather than fail the run."""
    forkserver = _forkserver_pid()
    try:
        return _started_process(source, opener, timeouts, log_format, name)
    except _FORKSERVER_GONE as error:
        logger.warning("the forkserver that starts decoder processes could not start one (%s: %s); trying "
                       "again with a new one", type(error).__name__, error)
    _wait_for_the_end_of(forkserver, _FORKSERVER_END_SECONDS)
    try:
        return _started_process(source, opener, timeouts, log_format, name)
    except _FORKSERVER_GONE as error:
        raise DecoderDidNotStart(
            f"the server could not start a decoder: the forkserver that starts them could not be reached, twice "
            f"({type(error).__name__}: {error}); the video is not to blame"
        ) from error


def _forkserver_pid() -> int | None:
    """The pid of multiprocessing's forkserver, if it started one (from its module: None if a
    Python release names it otherwise, and the retry then waits for nothing)."""
    pid = getattr(getattr(multiprocessing.forkserver, "_forkserver", None), "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None


def _wait_for_the_end_of(forkserver: int | None, seconds: float) -> None:
    """Wait up to `seconds` for a forkserver that failed to end, without reaping it: one that
    closed its socket takes a second or more to exit, and multiprocessing starts another only
    once it can reap the first (a retry a moment later met the same closed socket)."""
    if not hasattr(os, "waitid"):  # a Python without it (macOS): a moment's wait instead
        time.sleep(_FORKSERVER_END_POLL_SECONDS * 4)
        return
    deadline = time.monotonic() + seconds
    while forkserver is not None and time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, forkserver, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return  # ended, left for multiprocessing to reap
        except ChildProcessError:
            return  # reaped already: another start saw its end and started a new one
        time.sleep(_FORKSERVER_END_POLL_SECONDS)


def _started_process(
    source: VideoSource | None, opener: VideoOpener, timeouts: DecoderTimeouts,
    log_format: DecoderLogFormat | None, name: str,
) -> StartedProcess:
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


class DecodersCannotStart(RuntimeError):
    """Raised at start when a decoder process does not start: the server refuses to start."""


@functools.cache
def check_decoders_start() -> None:
    """Start one decoder process and wait for its `ready`, so that a server whose decoders
    cannot start refuses to start, rather than fail every run with an error no video caused.

    Raises DecodersCannotStart with the exit status and the usual cause. The process is given
    no file, so it exits as soon as its pipe closes. Once passed, later calls return at once.
    """
    try:
        process, connection = start_decoder_process(None, open_video, DecoderTimeouts())
    except DecoderDidNotStart as error:
        raise DecodersCannotStart(str(error)) from error
    try:
        first = _first_message(connection)
    finally:
        connection.close()
        exit_status = reap_decoder(process)
    if first is None:
        raise DecodersCannotStart(
            f"decoder processes cannot start: the first one ended (exit status {exit_status}) before it ran, "
            f"with the error printed above; {start_hint()}"
        )
    if first["type"] == "failed":  # it said why (no thread for FFmpeg's log, at a pids limit)
        raise DecodersCannotStart(f"decoder processes cannot start: the first one could not: "
                                  f"{messages.error_from(first)}")
    if first["type"] != "ready":
        raise RuntimeError(f"a decoder process began with {first['type']!r} instead of 'ready'")


def _first_message(connection: Connection) -> dict[str, Any] | None:
    """The first message on the pipe; None if it closed without one."""
    if not connection.poll(_START_CHECK_SECONDS):  # an end of file is readable too
        raise DecodersCannotStart(f"a decoder process did not start within {plain_number(_START_CHECK_SECONDS)} s")
    try:
        raw = connection.recv_bytes(messages.MAX_MESSAGE_BYTES)
    except (EOFError, ConnectionError):
        return None
    return messages.decode(raw)


def reap_decoder(process: multiprocessing.process.BaseProcess) -> int | None:
    """Wait for the process to end and release it; its exit code, None if it would not die.

    Still running after a grace period (normal exit) or SIGKILL (stuck in the kernel): it is
    killed and waited for once more, then no longer, rather than hold the run forever.
    """
    process.join(EXIT_GRACE_SECONDS)
    if process.exitcode is None:
        process.kill()
        process.join(EXIT_GRACE_SECONDS)
    exitcode = process.exitcode
    if exitcode is None:
        logger.warning("decoder process %s did not exit after SIGKILL", process.pid)
    else:
        process.close()
    return exitcode


def kill_quietly(process: multiprocessing.process.BaseProcess) -> None:
    """Kill without waiting, for a finalizer: one closed or gone already is left alone."""
    with suppress(ValueError, OSError):  # closed or gone already
        process.kill()


def end_decoder(started: StartedProcess) -> None:
    """Kill and reap a decoder process that serves no run."""
    process, connection = started
    connection.close()
    process.kill()
    reap_decoder(process)
