"""Decoders that crash, hang, crawl or fail: each ends its run with a typed error, this process lives on.

The misbehaving decoders are openers defined here and handed to the service like any
opener (`video_opener=`): the decoder process imports them from this module by name, so
the production code has no hook that a setting or the environment could turn on.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService
from fakes.media import presentation_times, write_variable_rate_video
from fakes.thread_limits import no_new_threads
from fakes.waiting import frame_segments_left
from videodag_service.errors import (
    DeadlineExceeded,
    DecoderDidNotStart,
    DecoderKilled,
    ErrorDetails,
    ServerOutOfResources,
    VideoTooLarge,
    VideoUnreadable,
)
from videodag_service.video import (
    FrameProcessed,
    VideoFilePipelineService,
    VideoLimits,
    decoder_lifecycle,
    isolated_video,
    probe_video,
)
from videodag_service.video import decoder_messages as messages
from videodag_service.video.decoder_lifecycle import (
    DECODER_PROCESS_NAME,
    DecodersCannotStart,
    DecoderTimeouts,
    start_hint,
)
from videodag_service.video.decoder_log import DecoderLogFormat
from videodag_service.video.decoder_process import serve_decoder
from videodag_service.video.isolated_video import IsolatedVideo
from videodag_service.video.reader import OpenedVideo, open_video
from videodag_service.video.sampling import FrameWindow

FAULT_FRAME = 3


def _segfault() -> None:
    ctypes.string_at(0)  # a real invalid read in native code, not a signal sent for show


def _hang() -> None:
    time.sleep(3600)


def _raise_unexpected() -> None:
    raise KeyError("a bug in the decoder")


def _raise_too_large() -> None:
    details = ErrorDetails(metadata={"limit": "frame_count"})
    raise VideoTooLarge("video too large: more frames than it declared", details)

UNLIMITED = VideoLimits()


class _FaultyVideo(OpenedVideo):
    """Decodes for real, then calls `fault` when frame FAULT_FRAME comes out of the decoder."""

    @staticmethod
    def fault() -> None:
        raise NotImplementedError

    def frames(self, window, limits=UNLIMITED, **hooks):  # type: ignore[no-untyped-def]
        for frame in super().frames(window, limits, **hooks):
            if frame.frame_index == FAULT_FRAME:
                self.fault()
            yield frame


def _exit_with_status_3() -> None:
    os._exit(3)


def _opened(video_class: type[OpenedVideo], path: Path) -> Iterator[OpenedVideo]:
    video = video_class(Path(path))
    try:
        yield video
    finally:
        video.close()


def _faulty(fault: Callable[[], None]) -> type[OpenedVideo]:
    return type(f"Video_{fault.__name__}", (_FaultyVideo,), {"fault": staticmethod(fault)})


# Module-level openers: the decoder process imports them by name.
@contextmanager
def open_segfaulting(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_segfault), path)


@contextmanager
def open_aborting(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(os.abort), path)


@contextmanager
def open_exiting(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_exit_with_status_3), path)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does


@contextmanager
def open_killed(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_killed), path)


@contextmanager
def open_hanging(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_hang), path)


@contextmanager
def open_failing_unexpectedly(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_raise_unexpected), path)


@contextmanager
def open_finding_too_many_frames(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_faulty(_raise_too_large), path)


@contextmanager
def open_hanging_before_probe(path: Path) -> Iterator[OpenedVideo]:
    _hang()
    yield OpenedVideo(Path(path))  # never reached


@contextmanager
def open_exiting_while_probing(path: Path) -> Iterator[OpenedVideo]:
    _exit_with_status_3()
    yield OpenedVideo(Path(path))  # never reached


class _LyingVideo(OpenedVideo):
    """Declares a tenth of its frames and ignores the limits: the server must apply them itself."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        count = max(1, self.info.frame_count // 10)
        self.info = dataclasses.replace(self.info, frame_count=count, duration_seconds=count / self.info.fps)

    def frames(self, window, limits=UNLIMITED, **hooks):  # type: ignore[no-untyped-def]
        return super().frames(window, UNLIMITED, **hooks)


@contextmanager
def open_lying_about_its_length(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_LyingVideo, path)


class _CrawlingVideo(OpenedVideo):
    """Makes progress, slowly: every grab takes 50 ms."""

    def frames(self, window, limits=UNLIMITED, *, on_grab=None, **hooks):  # type: ignore[no-untyped-def]
        def slow_grab() -> None:
            time.sleep(0.05)
            if on_grab is not None:
                on_grab()

        return super().frames(window, limits, on_grab=slow_grab, **hooks)


@contextmanager
def open_crawling(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_CrawlingVideo, path)


def _service(opener: Callable[[Path], Any], **kwargs: Any) -> VideoFilePipelineService:
    return VideoFilePipelineService(RecordingDagService(), isolation="process", video_opener=opener, **kwargs)


def _run_until_error(service: VideoFilePipelineService, path: Path, options: Any = None) -> list[int]:
    """Frames delivered before the run ended (the error propagates)."""
    delivered: list[int] = []
    for event in service.stream_run(DEFAULT_PIPELINE, path, options):
        if isinstance(event, FrameProcessed):
            delivered.append(event.frame_index)
    return delivered


def _assert_no_decoder_left() -> None:
    assert [p for p in multiprocessing.active_children() if p.name == DECODER_PROCESS_NAME] == []
    assert frame_segments_left() == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("videodag-")] == []


@pytest.mark.parametrize(
    ("opener", "reason"),
    [
        (open_segfaulting, f"the decoder crashed (signal {signal.SIGSEGV.value}, SIGSEGV)"),
        (open_aborting, f"the decoder crashed (signal {signal.SIGABRT.value}, SIGABRT)"),
        (open_exiting, "the decoder exited with status 3"),
        (open_exiting_while_probing, "the decoder exited with status 3"),
    ],
    ids=["segfault", "abort", "exit", "exit while probing"],
)
def test_a_crashing_decoder_ends_the_run_as_unreadable_and_the_next_run_works(
    make_video, opener: Callable[[Path], Any], reason: str
) -> None:
    path = make_video(10)
    delivered: list[int] = []
    with pytest.raises(VideoUnreadable) as raised:
        delivered.extend(_run_until_error(_service(opener, decode_ahead_bytes=1), path))
    assert str(raised.value) == f"Unable to read video file {path.name!r}: {reason}"
    assert raised.value.status_code == "INVALID_ARGUMENT"
    _assert_no_decoder_left()
    # This process is fine, and so is the next run, isolated or not.
    for isolation in ("process", "thread"):
        service = VideoFilePipelineService(RecordingDagService(), isolation=isolation)
        results = service.run_on_file(DEFAULT_PIPELINE, path)
        assert [item["frame_index"] for item in results] == list(range(10))


def test_frames_decoded_before_a_crash_are_delivered_first(make_video) -> None:
    path = make_video(10)
    delivered: list[int] = []
    with pytest.raises(VideoUnreadable, match="SIGSEGV"):
        for event in _service(open_segfaulting, decode_ahead_bytes=1).stream_run(DEFAULT_PIPELINE, path):
            if isinstance(event, FrameProcessed):
                delivered.append(event.frame_index)
    assert delivered == list(range(FAULT_FRAME))


def test_a_decoder_that_hangs_on_a_frame_is_killed_at_the_frame_limit(make_video) -> None:
    path = make_video(10)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        _run_until_error(_service(open_hanging, decode_frame_timeout_seconds=0.5), path)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    assert "the decoder stopped responding" in str(raised.value) and "0.5 s" in str(raised.value)
    assert raised.value.status_code == "DEADLINE_EXCEEDED"
    assert raised.value.details.metadata["limit"] == "decode_frame_timeout_seconds"
    _assert_no_decoder_left()


def test_a_decoder_that_hangs_before_its_probe_is_killed_at_the_frame_limit(make_video) -> None:
    path = make_video(10)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="stopped responding"):
        _run_until_error(_service(open_hanging_before_probe, decode_frame_timeout_seconds=0.5), path)
    assert time.monotonic() - started < 5
    _assert_no_decoder_left()


def test_a_slow_decoder_that_keeps_making_progress_is_not_mistaken_for_a_hung_one(make_video) -> None:
    # Stride 20 with 50 ms a grab: a second between kept frames, twice the frame limit; the
    # decoder's progress reports while it skips frames keep the run alive.
    path = make_video(41)
    results = _service(open_crawling, decode_frame_timeout_seconds=0.5).run_on_file(
        DEFAULT_PIPELINE, path, {"frame_stride": 20})
    assert [item["frame_index"] for item in results] == [0, 20, 40]


def test_the_run_limit_stops_a_decoder_that_is_slow_in_total(make_video) -> None:
    path = make_video(100)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        _run_until_error(_service(open_crawling, decode_frame_timeout_seconds=0.5, decode_run_timeout_seconds=1.0),
                         path)
    waited = time.monotonic() - started
    assert waited >= 1.0
    assert waited < 5
    assert "decode time limit of 1 s" in str(raised.value)
    assert raised.value.details.metadata["limit"] == "decode_run_timeout_seconds"
    _assert_no_decoder_left()


def test_the_run_limit_does_not_count_the_time_the_pipeline_takes(make_video) -> None:
    path = make_video(12)
    dag = RecordingDagService(delay_seconds=lambda _index: 0.1)  # 1.2 s of pipeline, a 0.5 s decode limit
    service = VideoFilePipelineService(dag, isolation="process", decode_run_timeout_seconds=0.5)
    assert [item["frame_index"] for item in service.run_on_file(DEFAULT_PIPELINE, path)] == list(range(12))


def test_an_unexpected_decoder_error_is_reported_not_mistaken_for_a_file_error(make_video) -> None:
    with pytest.raises(RuntimeError, match="the decoder process failed: KeyError: 'a bug in the decoder'"):
        _run_until_error(_service(open_failing_unexpectedly), make_video(10))
    _assert_no_decoder_left()


def test_a_file_error_found_while_decoding_keeps_its_type_and_details(make_video) -> None:
    with pytest.raises(VideoTooLarge, match="more frames than it declared") as raised:
        _run_until_error(_service(open_finding_too_many_frames), make_video(10))
    assert raised.value.details.metadata == {"limit": "frame_count"}


@pytest.fixture(scope="module")
def variable_rate_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_variable_rate_video(tmp_path_factory.mktemp("vfr") / "variable_rate.mp4", 45)


@pytest.mark.parametrize(
    ("limits", "limit"),
    [(VideoLimits(max_frames_total=20), "frame_count"), (VideoLimits(max_duration_seconds=3.0), "duration")],
)
def test_the_server_holds_the_frames_a_decoder_delivers_to_the_limits(
    variable_rate_video: Path, limits: VideoLimits, limit: str
) -> None:
    # 30 frames at 25 fps, then 15 at 5 fps: the declared average rate (about 5 fps) would
    # put frame 15 past 3 s, though it is presented at 0.6 s.
    times = presentation_times(variable_rate_video)
    fps = probe_video(variable_rate_video).fps
    service = _service(open_lying_about_its_length, limits=limits)
    delivered: list[int] = []
    with pytest.raises(VideoTooLarge) as raised:
        for event in service.stream_run(DEFAULT_PIPELINE, variable_rate_video):
            if isinstance(event, FrameProcessed):
                delivered.append(event.frame_index)
    assert raised.value.details.metadata["limit"] == limit
    if limit == "frame_count":
        assert raised.value.details.metadata == {"limit": limit, "maximum": "20", "found": "21"}
        assert delivered == list(range(20))
    else:
        assert delivered == [index for index, seconds in enumerate(times) if seconds + 1 / fps <= 3.0]
        assert delivered == list(range(30))
    _assert_no_decoder_left()


def test_a_crash_in_one_run_leaves_concurrent_runs_alone(make_video, sample_clip: Path) -> None:
    path = make_video(10)
    healthy: list[dict[str, Any]] = []
    slow = VideoFilePipelineService(RecordingDagService(delay_seconds=lambda _index: 0.01), isolation="process")
    runner = threading.Thread(target=lambda: healthy.extend(slow.run_on_file(DEFAULT_PIPELINE, sample_clip)))
    runner.start()
    for _ in range(3):
        with pytest.raises(VideoUnreadable, match="crashed"):
            _run_until_error(_service(open_segfaulting), path)
    runner.join(60)
    assert [item["frame_index"] for item in healthy] == list(range(120))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"isolation": "container"},
        {"isolation": "process", "video_opener": lambda path: None},
        {"isolation": "process", "decode_frame_timeout_seconds": 0},
        {"isolation": "process", "decode_run_timeout_seconds": -1.0},
    ],
    ids=["unknown-isolation", "local-opener", "zero-frame-limit", "negative-run-limit"],
)
def test_bad_isolation_settings_are_refused_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        VideoFilePipelineService(RecordingDagService(), **kwargs)


def test_limits_can_be_switched_off(make_video) -> None:
    path = make_video(5)
    service = _service(open_crawling, decode_frame_timeout_seconds=None, decode_run_timeout_seconds=None)
    assert [item["frame_index"] for item in service.run_on_file(DEFAULT_PIPELINE, path)] == list(range(5))


# -- a decoder that speaks nonsense: the server checks every message it gets ----------------------


def _liar(connection: Connection, path: str, lie: str) -> None:
    """A decoder process that probes honestly, then breaks the protocol in one way."""
    connection.send_bytes(messages.encode("ready"))
    connection.send_bytes(messages.opened(probe_video(path)))
    request = messages.request_from(messages.decode(connection.recv_bytes()))
    connection.send_bytes(messages.encode("attached"))
    frame = {"slot": 0, "frame_index": 0, "timestamp_seconds": 0.0, "shape": [48, 64, 3]}
    if lie == "slot outside the ring":
        connection.send_bytes(messages.encode("frame", **{**frame, "slot": request.layout.slots}))
    elif lie == "frames out of order":
        connection.send_bytes(messages.encode("frame", **frame))
        connection.send_bytes(messages.encode("frame", **frame))
    elif lie == "a frame past the window":
        past_end = {"frame_index": request.window.stop_index, "timestamp_seconds": request.window.end_seconds}
        connection.send_bytes(messages.encode("frame", **{**frame, **past_end}))
    elif lie == "a huge message":
        connection.send_bytes(b"{" * (messages.MAX_MESSAGE_BYTES + 1))
    elif lie == "an unknown message":
        connection.send_bytes(messages.encode("opened", info={}))
    _hang()


@pytest.mark.parametrize(
    ("lie", "problem"),
    [
        ("slot outside the ring", "outside the ring"),
        ("frames out of order", "frame 0 is out of order"),
        ("a frame past the window", "frame 5 is out of order or outside the window"),
        ("a huge message", f"a message over {messages.MAX_MESSAGE_BYTES} bytes"),
        ("an unknown message", "expected frame or finished, got 'opened'"),
    ],
)
def test_a_decoder_breaking_the_protocol_is_killed_and_the_file_unreadable(make_video, lie: str, problem: str) -> None:
    path = make_video(10)
    context = multiprocessing.get_context("forkserver")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=_liar, args=(child_end, str(path), lie), name=DECODER_PROCESS_NAME)
    process.start()
    child_end.close()
    video = IsolatedVideo(path, process, parent_end, DecoderTimeouts(frame_seconds=5.0), ring_budget_bytes=1)
    try:
        video.wait_until_opened()
        with pytest.raises(VideoUnreadable, match="the decoder sent a malformed message") as raised:
            list(video.frames(FrameWindow(end_seconds=0.2, stop_index=5), UNLIMITED))
        assert problem in str(raised.value)
    finally:
        video.close()
    _assert_no_decoder_left()


# -- a decoder process that ends before it runs: the server's fault, not the video's ---------------


def _end_before_running(connection: Connection) -> None:
    """What a decoder process does when the parent's main module fails in it, before any decoder code."""
    del connection
    _exit_with_status_3()


def _killed_before_running(connection: Connection) -> None:
    """A decoder process the OOM killer (or an operator) ends before its first message."""
    del connection
    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def _video_decoded_by(target: Callable[[Connection], None], path: Path, frame_seconds: float = 5.0) -> (
        Iterator[IsolatedVideo]):
    """An IsolatedVideo whose decoder process runs `target` instead of the decoder."""
    context = multiprocessing.get_context("forkserver")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=target, args=(child_end,), name=DECODER_PROCESS_NAME)
    process.start()
    child_end.close()
    video = IsolatedVideo(path, process, parent_end, DecoderTimeouts(frame_seconds=frame_seconds),
                          ring_budget_bytes=1)
    try:
        yield video
    finally:
        video.close()


def test_a_decoder_that_ends_before_it_runs_is_an_internal_error_not_a_bad_video(
    make_video, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_video(3)
    with _video_decoded_by(_end_before_running, path) as video, pytest.raises(DecoderDidNotStart) as raised:
        video.wait_until_opened()
    assert str(raised.value) == (f"the server could not start a decoder for {path.name!r}: the process ended "
                                 "(exit status 3) before it ran; the server's log says why")
    assert (raised.value.status_code, raised.value.reason) == ("INTERNAL", "DECODER_DID_NOT_START")
    assert start_hint() in caplog.text  # the operator learns the usual cause
    _assert_no_decoder_left()


def _no_thread_for_ffmpegs_log(connection: Connection) -> None:
    """The real decoder, in a process at its pids limit: no thread can start to read FFmpeg's log."""
    with no_new_threads(""):
        serve_decoder(connection, None, open_video, 1.0, DecoderLogFormat())


def test_a_decoder_that_cannot_start_its_log_reader_fails_the_run_for_want_of_threads(
    make_video, caplog: pytest.LogCaptureFixture
) -> None:
    """It ended with exit status 1, its traceback lost in the pipe it had put in place of stderr:
    INTERNAL "could not start a decoder", and a log line blaming how the server was started."""
    with _video_decoded_by(_no_thread_for_ffmpegs_log, make_video(3)) as video, \
            pytest.raises(ServerOutOfResources) as raised:
        video.wait_until_opened()
    assert (raised.value.status_code, raised.value.reason) == ("UNAVAILABLE", "SERVER_OUT_OF_RESOURCES")
    assert str(raised.value).startswith(
        "the server ran out of threads for this call (RuntimeError: can't start new thread)")
    assert start_hint() not in caplog.text
    _assert_no_decoder_left()


def _serving_with_no_thread_for_ffmpegs_log(connection: Connection, *arguments: Any) -> None:
    """`serve_decoder` in a process at its pids limit."""
    with no_new_threads(""):
        serve_decoder(connection, *arguments)


def test_a_server_whose_first_decoder_cannot_start_its_log_reader_refuses_to_start_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start check took the decoder's report for a bug: RuntimeError "a decoder process began
    with 'failed' instead of 'ready'", and a server that exited with a traceback."""
    monkeypatch.setattr(decoder_lifecycle, "serve_decoder", _serving_with_no_thread_for_ffmpegs_log)
    with pytest.raises(DecodersCannotStart) as raised:
        decoder_lifecycle.check_decoders_start.__wrapped__()
    assert str(raised.value) == (
        "decoder processes cannot start: the first one could not: the server ran out of threads for this call "
        "(RuntimeError: can't start new thread); retry shortly, or with fewer calls at once")
    _assert_no_decoder_left()


def _slow_to_start_then_refusing_the_file(connection: Connection) -> None:
    """A decoder process that takes 1.5 s to start, as on a loaded machine, then finds the file unreadable."""
    time.sleep(1.5)
    connection.send_bytes(messages.encode("ready"))
    connection.send_bytes(messages.failed(VideoUnreadable("Unable to read video file 'x.mp4': not a video")))


def _never_ready(connection: Connection) -> None:
    del connection
    time.sleep(60)


def test_a_decoder_slow_to_start_is_waited_for_beyond_the_frame_limit(make_video) -> None:
    """Starting a process is the server's work: on a loaded machine it took longer than a short
    frame limit, and the video's decoder was said to have stopped responding."""
    with _video_decoded_by(_slow_to_start_then_refusing_the_file, make_video(3), frame_seconds=0.5) as video, \
            pytest.raises(VideoUnreadable, match="not a video"):
        video.wait_until_opened()
    _assert_no_decoder_left()


def test_a_decoder_that_never_starts_is_the_servers_failure_not_the_videos(
    make_video, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(isolated_video, "DECODER_START_SECONDS", 1.0)
    path = make_video(3)
    with _video_decoded_by(_never_ready, path, frame_seconds=0.2) as video, \
            pytest.raises(DecoderDidNotStart) as raised:
        video.wait_until_opened()
    assert str(raised.value) == (f"the server could not start a decoder for {path.name!r} within 1 s (too busy, or "
                                 "its decoders cannot start: its log says which); the video is not to blame")
    assert "did not start within 1 s" in caplog.text
    _assert_no_decoder_left()


def test_a_decoder_killed_before_it_runs_is_a_kill_not_a_startup_failure(
    make_video, caplog: pytest.LogCaptureFixture
) -> None:
    with _video_decoded_by(_killed_before_running, make_video(3)) as video, pytest.raises(DecoderKilled):
        video.wait_until_opened()
    assert start_hint() not in caplog.text  # a kill says nothing about how the server was started
    _assert_no_decoder_left()


def test_a_decoder_killed_mid_run_blames_no_video_and_says_retry(make_video) -> None:
    """SIGKILL comes from the out-of-memory killer or an operator, not from the file: a caller
    told INVALID_ARGUMENT would not try again, and a job failed for good."""
    path = make_video(10)
    delivered: list[int] = []
    with pytest.raises(DecoderKilled) as raised:
        delivered.extend(_run_until_error(_service(open_killed, decode_ahead_bytes=1), path))
    assert str(raised.value) == (
        f"the decoder of {path.name!r} was killed (SIGKILL), most likely by the system's out-of-memory killer; the "
        "video is not to blame: retry shortly, or with fewer runs at once")
    assert (raised.value.status_code, raised.value.reason) == ("UNAVAILABLE", "DECODER_KILLED")
    assert raised.value.details.retry_after_seconds == 5.0
    _assert_no_decoder_left()
