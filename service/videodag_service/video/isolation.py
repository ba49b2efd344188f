"""Decode an untrusted file in a child process, so a decoder crash or hang ends one run, not the server.

`open_isolated_video` starts a decoder process for one file (`decoder_process`, started and
reaped by `decoder_lifecycle`), waits for its probe and yields an `IsolatedVideo`
(`isolated_video`), which looks to the run like an `OpenedVideo` and says how a
misbehaving decoder ended. Whichever way the block exits, the process is dead and reaped
and the ring unlinked when it has exited. Processes come from a preloaded forkserver
(`decoder_context`); their exit status is safe to ask for from any thread (`child_processes`).

A process takes about 7 ms to start (2 cores), a delay every run would add to its first
result. `start_decoder_ahead` starts one before its file is complete, while the upload is
still arriving, and hands it the file's path once it is stored; or hands it a process
started before the call (`spare_decoder`).
"""

from __future__ import annotations

import logging
import multiprocessing.process
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from videodag_service.errors import VideodagError
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_lifecycle import (
    DecoderTimeouts,
    StartedProcess,
    end_decoder,
    start_decoder_process,
)
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.isolated_video import IsolatedVideo
from videodag_service.video.reader import VideoOpener, VideoSource, open_video

logger = logging.getLogger(__name__)

_STARTER_THREAD_NAME = "videodag-decoder-start"


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
