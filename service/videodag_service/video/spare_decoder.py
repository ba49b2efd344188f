"""One decoder process kept started ahead of the next run.

A decoder process is fresh for every run, so that no run's file is ever decoded where
another run's was. Starting one (the forkserver's fork, the main module run again, the
log pipe) takes 7-10 ms on 2 cores. `start_decoder_ahead` overlaps that with the upload,
but an upload of a few megabytes over loopback is over sooner, and a run on a stored file
(`VideoFilePipelineService.stream_run`) has no upload to hide it behind. A spare is started
once the previous one is taken, has opened nothing when a run takes it, and is then ended
by its run as any decoder is. Measured side by side on 2 cores over loopback gRPC
(`frame_stats_v1`, 30 calls each): the first result comes 6-7 ms sooner after the upload's
end, on the sample clip (39 to 33 ms, median) and on the 720p clip (44 to 37 ms).

A spare is handed out only once it has said it is ready; until then a run starts a process
of its own, as it would without a spare. One spare is kept: a second run starting at the
same moment starts its own. A spare killed while it waited is not handed out, and one
killed a moment before it was taken (which still looks alive until its exit has closed its
pipe) is replaced once by a process of the run's own (`isolation.open_isolated_video`). A
spare waiting uses no CPU and 4-6 MB of memory of its own (40 MB resident, most of it
shared with the forkserver it was forked from).

(A spare decodes nothing before its run: warming it up on a small clip, so that its first
video would not pay for the page faults of a fresh process, costs more than it saves.)
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import threading
from multiprocessing.connection import Connection

from videodag_service.observability.logging import json_lines_configured
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_lifecycle import (
    DECODER_PROCESS_NAME,
    KILL_AT_EXIT_PRIORITY,
    DecoderTimeouts,
    StartedProcess,
    end_decoder,
    kill_quietly,
    start_decoder_process,
)
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.reader import VideoOpener

logger = logging.getLogger(__name__)

SPARE_PROCESS_NAME = "videodag-decoder-spare"
"""A spare's name until a run takes it; it is then named as any decoder."""
SPARE_STARTER_THREAD_NAME = "videodag-spare-decoder-start"


class SpareDecoder:
    """Keeps one started decoder process for the next run to take; close() ends it.

    `opener` and `timeouts` are those of the runs that take it, set at the process's start.
    A SpareDecoder dropped without close() ends its spare when it is collected, or at the
    interpreter's exit at the latest.
    """

    def __init__(self, opener: VideoOpener, timeouts: DecoderTimeouts) -> None:
        self._keeper = _Keeper(opener, timeouts)
        # Killed when collected, and at the interpreter's exit before multiprocessing joins its
        # children: a decoder ignores the SIGTERM that multiprocessing would send it, and the
        # join would never end. The callback is the keeper's, so that this object can still be
        # collected, and it only kills: the garbage collector may call it in the middle of a
        # poll of that very process (`child_processes`), and multiprocessing reaps it later.
        self._kill_when_dropped = multiprocessing.util.Finalize(
            self, self._keeper.kill_spare, exitpriority=KILL_AT_EXIT_PRIORITY
        )
        self._keeper.start_next()

    def take(self) -> StartedProcess | None:
        """The spare, if it is ready, for the one run that uses it; None otherwise. Never waits.

        Its `ready` is read here (`StartedDecoder.said_ready`): whether the pipe has ended
        after it says whether the process still lives, where the process's exit status may
        not be known yet.
        """
        return self._keeper.take()

    def close(self) -> None:
        """End and reap the spare, or the one being started; later takes return None."""
        self._kill_when_dropped.cancel()
        self._keeper.close()


class _Keeper:
    """The spare and its replacement's start, apart from `SpareDecoder` so that a finalizer can end them."""

    def __init__(self, opener: VideoOpener, timeouts: DecoderTimeouts) -> None:
        self._opener = opener
        self._timeouts = timeouts
        self._lock = threading.Lock()
        self._spare: StartedProcess | None = None
        self._starting: threading.Thread | None = None
        self._closed = False

    def take(self) -> StartedProcess | None:
        with self._lock:
            spare = self._spare
            # Readable once its `ready` is there, or once it has died.
            if spare is not None and spare[1].poll(0):
                self._spare = None
            else:
                spare = None
        self.start_next()  # after a failed start too: it may succeed now
        if spare is None:
            return None
        # Killed while it waited (the OOM killer, a forkserver gone): never handed out.
        if not (_said_ready_and_lives(spare[1]) and _lives(spare[0].pid)):
            end_decoder(spare)
            return None
        spare[0].name = DECODER_PROCESS_NAME
        return spare

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
            starting = self._starting
        if starting is not None:
            starting.join()
        if spare is not None:
            end_decoder(spare)

    def kill_spare(self) -> None:
        """Kill the spare without waiting for anything; later takes return None. A spare still
        being started is ended by its starter, which sees that it is not wanted."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            process, connection = spare
            connection.close()
            kill_quietly(process)

    def start_next(self) -> None:
        """Start the next spare in a thread of its own, unless one is being started already."""
        with self._lock:
            if self._closed or self._spare is not None or self._starting is not None:
                return
            starting = threading.Thread(target=self._start, name=SPARE_STARTER_THREAD_NAME, daemon=True)
            try:
                starting.start()
            except RuntimeError as error:  # at the threads limit: the next take tries again
                # Kept, the thread that never ran would have been taken for a start under way:
                # no spare again until a restart, and close() failing to join it.
                logger.warning("could not start a spare decoder process: %s", error)
                return
            self._starting = starting

    def _start(self) -> None:
        try:
            # No request id: a spare serves no call yet, and learns its call's with its file.
            log_format = DecoderLogFormat(json_lines_configured())
            started = start_decoder_process(None, self._opener, self._timeouts, log_format, name=SPARE_PROCESS_NAME)
        except Exception as error:  # runs start processes of their own, and say so if they cannot
            with self._lock:
                self._starting = None  # before the word of it: whoever reads the log may try again at once
            logger.warning("could not start a spare decoder process: %s", error)
            return
        with self._lock:
            self._starting = None
            closed = self._closed
            if not closed:
                self._spare = started
        if closed:
            end_decoder(started)


def _lives(pid: int | None) -> bool:
    """Whether the process has not exited, as the kernel says (`/proc`): once, under CI load,
    the pipe alone said a spare SIGKILLed while it waited, a zombie already, still lived, and
    it was handed out. Where there is no `/proc`, the pipe's word stands."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # gone, where /proc is there to say so
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _said_ready_and_lives(connection: Connection) -> bool:
    """Read the spare's first message: True if it is `ready` and nothing follows it, not even
    the end of the pipe that a process's death makes readable."""
    try:
        said_ready = messages.decode(connection.recv_bytes(messages.MAX_MESSAGE_BYTES))["type"] == "ready"
    except (EOFError, OSError, messages.MalformedMessage):
        return False
    return said_ready and not connection.poll(0)
