"""A decoder that crashes or hangs inside the real server ends its own run only.

The server is built in-process with a `VideoFilePipelineService` whose decoder process opens
files with an opener from this module: it decodes for real, and for the small generated
videos (64x48) segfaults or hangs at frame 2. The sample clip decodes normally, so a run on
it shows the same server still serving, during and after the faulty run.
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from hardening_support import (
    Request,
    assert_still_serving,
    chunks,
    config,
    decoder_processes,
    open_fds,
    raw_call,
    settled_threads,
    spare_decoders,
    threads_but_rpc_workers,
    wait_until,
)
from harness import ServerFactory, ServerHarness

from fakes.waiting import frame_segments_left
from videodag.v1 import video_pipeline_service_pb2_grpc
from videodag_client import DeadlineExceeded, FrameResult, InvalidArgument, RunOptions, RunSummary
from videodag_service import servicer as servicer_module
from videodag_service.video import VideoFilePipelineService, VideoLimits
from videodag_service.video import isolation as isolation_module
from videodag_service.video.reader import OpenedVideo
from videodag_service.video.spare_decoder import SpareDecoder

FAULT_FRAME = 2
SMALL_VIDEO_WIDTH = 64  # fakes.media's indexed videos
HEALTHY_FRAMES = 120  # the whole sample clip at 50 ms a frame: it outlasts the faulty run by seconds
DECODE_FRAME_TIMEOUT = 4.0  # the healthy runs have it too: 2 s failed them 1 time in 3 at a load of 5-8

UNLIMITED = VideoLimits()


class _FaultyOnSmallVideos(OpenedVideo):
    def fault(self) -> None:
        raise NotImplementedError

    def frames(self, window, limits=UNLIMITED, **hooks):  # type: ignore[no-untyped-def]
        for frame in super().frames(window, limits, **hooks):
            if self.info.width == SMALL_VIDEO_WIDTH and frame.frame_index == FAULT_FRAME:
                self.fault()
            yield frame


class _SegfaultingVideo(_FaultyOnSmallVideos):
    def fault(self) -> None:
        ctypes.string_at(0)


class _HangingVideo(_FaultyOnSmallVideos):
    def fault(self) -> None:
        time.sleep(3600)


def _opened(video_class: type[OpenedVideo], path: Path) -> Iterator[OpenedVideo]:
    video = video_class(Path(path))
    try:
        yield video
    finally:
        video.close()


@contextmanager
def open_segfaulting_small_videos(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_SegfaultingVideo, path)


@contextmanager
def open_hanging_small_videos(path: Path) -> Iterator[OpenedVideo]:
    yield from _opened(_HangingVideo, path)


def _server_decoding_with(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, opener: Callable[[Path], Any]
) -> ServerHarness:
    def isolated_video_service(*args: Any, **kwargs: Any) -> VideoFilePipelineService:
        # Short, so a hang is found quickly, yet room for the healthy runs' decoders on a loaded machine.
        kwargs.update(isolation="process", video_opener=opener, decode_frame_timeout_seconds=DECODE_FRAME_TIMEOUT)
        return VideoFilePipelineService(*args, **kwargs)

    monkeypatch.setattr(servicer_module, "VideoFilePipelineService", isolated_video_service)
    return make_server(max_concurrent_runs=3)


def _healthy_run_in_background(server: ServerHarness, video: Path) -> tuple[threading.Thread, list[Any]]:
    """A run on the sample clip through the slow pipeline (50 ms a frame, 3 s), started first."""
    events: list[Any] = []

    def run() -> None:
        events.extend(server.client.upload_and_run(video, "slow", RunOptions(max_frames=HEALTHY_FRAMES), timeout=60))

    runner = threading.Thread(target=run)
    runner.start()
    return runner, events


def _assert_nothing_left(server: ServerHarness, fds_before: int, threads_before: list[str]) -> None:
    assert decoder_processes() == []
    assert frame_segments_left() == []
    assert server.leftover_uploads() == []
    # A finished call's descriptors are released a little after its status reaches the client.
    assert wait_until(lambda: open_fds() <= fds_before), (open_fds(), fds_before)
    assert wait_until(lambda: threads_but_rpc_workers() == threads_before), threads_but_rpc_workers()


def test_a_decoder_crash_ends_its_run_as_invalid_argument_while_the_server_serves_others(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, make_video, sample_clip: Path
) -> None:
    server = _server_decoding_with(make_server, monkeypatch, open_segfaulting_small_videos)
    assert_still_serving(server, sample_clip)  # warms up the forkserver before resources are counted
    fds_before, threads_before = open_fds(), settled_threads()
    runner, healthy = _healthy_run_in_background(server, sample_clip)
    frames: list[int] = []
    with pytest.raises(InvalidArgument) as raised:
        for event in server.client.upload_and_run(make_video(10), "frame_stats_v1", timeout=30):
            if isinstance(event, FrameResult):
                frames.append(event.frame_index)
    assert runner.is_alive()  # the healthy run was under way when the decoder crashed
    runner.join(60)

    assert frames == list(range(FAULT_FRAME))
    assert raised.value.reason == "VIDEO_UNREADABLE"
    assert "Unable to read video file" in raised.value.message
    assert "the decoder crashed (signal 11, SIGSEGV)" in raised.value.message
    assert [e.frame_index for e in healthy if isinstance(e, FrameResult)] == list(range(HEALTHY_FRAMES))
    assert isinstance(healthy[-1], RunSummary)
    assert_still_serving(server, sample_clip)
    _assert_nothing_left(server, fds_before, threads_before)


def test_a_hung_decoder_ends_its_run_as_deadline_exceeded_while_the_server_serves_others(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, make_video, sample_clip: Path
) -> None:
    server = _server_decoding_with(make_server, monkeypatch, open_hanging_small_videos)
    assert_still_serving(server, sample_clip)
    fds_before, threads_before = open_fds(), settled_threads()
    runner, healthy = _healthy_run_in_background(server, sample_clip)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        list(server.client.upload_and_run(make_video(10), "frame_stats_v1", timeout=30))
    elapsed = time.monotonic() - started
    assert runner.is_alive()
    runner.join(60)

    assert elapsed >= DECODE_FRAME_TIMEOUT
    assert elapsed < DECODE_FRAME_TIMEOUT + 10
    assert "the decoder stopped responding" in raised.value.message
    assert [e.frame_index for e in healthy if isinstance(e, FrameResult)] == list(range(HEALTHY_FRAMES))
    assert_still_serving(server, sample_clip)
    _assert_nothing_left(server, fds_before, threads_before)


class _HalfUpload:
    """A stored upload (no decode_during_upload) that stops after half its bytes until released."""

    def __init__(self, data: bytes, **config_fields: object) -> None:
        self.data = data
        self.release = threading.Event()
        self._config = config(**config_fields)

    def __iter__(self) -> Iterator[Request]:
        yield self._config
        yield from chunks(self.data[: len(self.data) // 2])
        self.release.wait(60)
        yield from chunks(self.data[len(self.data) // 2 :])


@pytest.mark.parametrize("ending", ["cancel", "checksum mismatch"])
def test_the_decoder_process_starts_during_the_upload_and_an_upload_that_fails_leaves_none(
    server: ServerHarness, sample_clip: Path, ending: str
) -> None:
    data = sample_clip.read_bytes()
    upload = _HalfUpload(data, sha256="0" * 64 if ending == "checksum mismatch" else "")
    with grpc.insecure_channel(server.target) as channel:
        call = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel).UploadAndRun(iter(upload), timeout=60)
        # Half the bytes are in: the process that will decode them is already waiting.
        assert wait_until(lambda: len(decoder_processes()) == 1), decoder_processes()
        if ending == "cancel":
            call.cancel()
            upload.release.set()
        else:
            upload.release.set()
            with pytest.raises(grpc.RpcError) as failed:
                list(call)
            assert failed.value.code() == grpc.StatusCode.DATA_LOSS
            assert "checksum mismatch" in failed.value.details()
    assert wait_until(lambda: not decoder_processes()), decoder_processes()
    assert server.uploads_left_after() == []


def test_a_decoder_that_cannot_start_fails_the_call_while_the_client_still_sends(
    server: ServerHarness, sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no spare ready (another run took it, or it could not start either), the process
    is started while the upload is stored: out of descriptors, say, the call fails with
    that error as soon as it is known, not after the whole upload and its upload_received."""
    assert_still_serving(server, sample_clip)

    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(isolation_module, "start_decoder_process", no_process)
    monkeypatch.setattr(SpareDecoder, "take", lambda spare: None)
    pieces = list(chunks(sample_clip.read_bytes(), 16 * 1024))
    sent: list[Request] = []

    def slowly() -> Iterator[Request]:
        yield config()
        for piece in pieces:
            sent.append(piece)
            yield piece
            time.sleep(0.02)

    with grpc.insecure_channel(server.target) as channel:
        outcome = raw_call(channel, slowly(), timeout=60)
    assert outcome.code == grpc.StatusCode.UNAVAILABLE, outcome.details  # SERVER_OUT_OF_RESOURCES: retry
    assert "Too many open files" in outcome.details
    assert outcome.responses == []
    assert len(sent) < len(pieces) // 2
    monkeypatch.undo()
    assert_still_serving(server, sample_clip)
    assert server.leftover_uploads() == []


def test_a_run_decodes_in_the_spare_that_waited_and_stopping_the_server_ends_the_next(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    """The server keeps a decoder process started ahead of the next run; the run that takes it
    ends it, the next spare is started, and the server's stop ends that one."""
    others = set(spare_decoders())  # another test's server may still be stopping
    server = make_server()
    assert wait_until(lambda: len(set(spare_decoders()) - others) == 1, timeout=60), spare_decoders()
    [waiting] = set(spare_decoders()) - others

    def decoder_of_a_run() -> int:
        stream = server.client.upload_and_run(sample_clip, "slow", RunOptions(max_frames=5))
        first = next(event for event in stream if isinstance(event, FrameResult))
        assert first.frame_index == 0
        [decoder] = [process.pid for process in decoder_processes()]
        assert isinstance(list(stream)[-1], RunSummary)
        assert wait_until(lambda: not decoder_processes()), decoder_processes()
        return decoder

    # A spare is handed out once it has said it is ready; a run before that (a slow start on a
    # busy machine) starts a process of its own and leaves the spare waiting for the next.
    assert wait_until(lambda: decoder_of_a_run() == waiting, timeout=60, interval=0.2)
    assert wait_until(lambda: len(set(spare_decoders()) - others - {waiting}) == 1), spare_decoders()
    server.stop()
    assert set(spare_decoders()) - others == set()
