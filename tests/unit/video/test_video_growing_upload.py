"""Decoding an upload while it arrives: a reader that waits for bytes, and which containers
let FFmpeg start before the last byte."""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService
from fakes.fake_plugins import Recorder, overlapping_dag
from fakes.media import CONTAINER_VARIANTS, write_container_variant
from videodag_service.video import GrowingUpload, SamplingOptions, VideoFilePipelineService, open_video
from videodag_service.video import capture as capture_module
from videodag_service.video.events import FrameProcessed, VideoOpened
from videodag_service.video.growing_upload import GrowingFileReader, new_abandon_signal
from videodag_service.video.sampling import plan_window

# Containers whose first frame FFmpeg decodes from their first half; the others need their end
# (a fragmented MP4 only in a process that tells FFmpeg to leave later fragments for later).
EARLY_CONTAINERS = ["faststart.mp4", "matroska.mkv"]
LATE_CONTAINERS = ["index_at_end.mp4", "fragmented.mp4", "mpegts.ts", "mpeg4.avi"]
WAIT = 30.0


class GrowingFile:
    """A file being written by the test, shown to readers as a GrowingUpload."""

    def __init__(self, directory: Path, content: bytes, name: str = "upload.mp4") -> None:
        self.content = content
        self.path = directory / name
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self.written = 0
        self.upload = GrowingUpload(self.path, len(content), new_abandon_signal())

    def write_until(self, end: int) -> None:
        self._file.write(self.content[self.written:end])
        self._file.flush()
        self.written = max(self.written, end)

    def close(self) -> None:
        self._file.close()


@pytest.fixture
def growing(tmp_path: Path) -> Iterator[GrowingFile]:
    file = GrowingFile(tmp_path, bytes(range(256)) * 40)
    yield file
    file.close()


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("containers")
    return {name: write_container_variant(directory, name) for name in CONTAINER_VARIANTS}


def _in_thread(function: object) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()  # type: ignore[operator]
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_read_returns_what_has_arrived_and_waits_for_more(growing: GrowingFile) -> None:
    growing.write_until(100)
    reader = GrowingFileReader(growing.upload)
    assert reader.read(1000) == growing.content[:100]
    thread, outcome = _in_thread(lambda: reader.read(50))
    thread.join(0.3)
    assert thread.is_alive(), "a read past the bytes that arrived must wait"
    growing.write_until(130)
    thread.join(WAIT)
    assert outcome["value"] == growing.content[100:130]
    reader.close()


def test_the_end_is_the_declared_size(growing: GrowingFile) -> None:
    growing.write_until(len(growing.content))
    reader = GrowingFileReader(growing.upload)
    assert reader.seek(-1, io.SEEK_END) == len(growing.content) - 1
    assert reader.read(10) == growing.content[-1:]
    assert reader.read(10) == b""
    reader.close()


def test_an_abandoned_upload_ends_a_waiting_read(growing: GrowingFile) -> None:
    growing.write_until(10)
    reader = GrowingFileReader(growing.upload)
    reader.seek(10)
    thread, outcome = _in_thread(lambda: reader.read(10))
    thread.join(0.2)
    assert thread.is_alive()
    growing.upload.abandoned.set()
    thread.join(WAIT)
    assert outcome["value"] == b""
    reader.close()



def test_an_upload_is_cut_short_once_abandoned_before_all_its_bytes_came(growing: GrowingFile) -> None:
    """Its signal is set at its end whichever way it ended: only the bytes tell a cancel."""
    growing.write_until(100)
    assert not growing.upload.cut_short()
    growing.upload.abandoned.set()
    assert growing.upload.cut_short()
    growing.write_until(len(growing.content))
    assert not growing.upload.cut_short(), "all its bytes came: the end of a whole upload"
    growing.close()
    growing.path.unlink()
    assert growing.upload.cut_short(), "removed with its failed run"


def test_the_abandon_signal_stays_set_and_leaves_no_named_semaphore_or_descriptor() -> None:
    def semaphores() -> set[str]:
        return {path.name for path in Path("/dev/shm").glob("sem.mp-*")}

    semaphores_before, fds_before = semaphores(), len(os.listdir("/proc/self/fd"))
    signal = new_abandon_signal()
    assert semaphores() == semaphores_before
    assert not signal.is_set()
    assert not signal.wait(0.05)
    signal.set()
    signal.set()
    assert signal.is_set()
    assert signal.wait(None)
    signal.close()
    assert signal.is_set()  # a reader that asks after the upload is over is told to stop
    assert len(os.listdir("/proc/self/fd")) == fds_before

def test_the_wait_hook_is_called_while_waiting_and_never_sent(growing: GrowingFile) -> None:
    calls: list[float] = []
    upload = growing.upload.waiting_with(lambda: calls.append(time.monotonic()))
    reader = GrowingFileReader(upload)
    thread, outcome = _in_thread(lambda: reader.read(10))
    time.sleep(0.1)
    growing.write_until(10)
    thread.join(WAIT)
    assert outcome["value"] == growing.content[:10]
    assert len(calls) >= 2
    assert upload == growing.upload  # the hook is no part of the upload's identity
    rebuild, arguments = upload.__reduce__()
    assert rebuild(*arguments).on_wait is None  # what a decoder process receives has no hook
    reader.close()


@pytest.mark.parametrize("name", EARLY_CONTAINERS)
def test_these_containers_decode_their_first_frame_from_the_first_half(
    tmp_path: Path, containers: dict[str, Path], name: str
) -> None:
    source = containers[name]
    growing = GrowingFile(tmp_path, source.read_bytes(), name)
    growing.write_until(len(growing.content) // 2)

    def first_frame_then_rest() -> tuple[int, int]:
        with open_video(growing.upload) as video:
            frames = video.frames(plan_window(SamplingOptions(), video.info.fps))
            assert next(frames).frame_index == 0
            written_at_first_frame = growing.written
            growing.write_until(len(growing.content))
            return written_at_first_frame, 1 + sum(1 for _ in frames)

    thread, outcome = _in_thread(first_frame_then_rest)
    thread.join(WAIT)
    growing.close()
    assert "error" not in outcome, outcome.get("error")
    written_at_first_frame, frame_count = outcome["value"]  # type: ignore[misc]
    assert written_at_first_frame == len(growing.content) // 2
    with open_video(source) as whole:
        expected = sum(1 for _ in whole.frames(plan_window(SamplingOptions(), whole.info.fps)))
    assert frame_count == expected == 150


@pytest.mark.parametrize("name", LATE_CONTAINERS)
def test_these_containers_wait_for_the_end_and_then_decode_every_frame(
    tmp_path: Path, containers: dict[str, Path], name: str
) -> None:
    growing = GrowingFile(tmp_path, containers[name].read_bytes(), name)
    growing.write_until(len(growing.content) - 1000)

    def open_and_count() -> tuple[int, int]:
        with open_video(growing.upload) as video:
            written_when_open = growing.written
            return written_when_open, sum(1 for _ in video.frames(plan_window(SamplingOptions(), video.info.fps)))

    thread, outcome = _in_thread(open_and_count)
    thread.join(0.5)
    assert thread.is_alive(), "FFmpeg reads this container's end when it opens it"
    growing.write_until(len(growing.content))
    thread.join(WAIT)
    growing.close()
    assert outcome.get("value") == (len(growing.content), 150)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_run_keeps_pace_with_a_slow_upload_without_tripping_the_decoder_time_limit(
    tmp_path: Path, containers: dict[str, Path], isolation: str
) -> None:
    """The upload stalls for longer than the frame time limit: waiting for bytes is not a hang."""
    growing = GrowingFile(tmp_path, containers["faststart.mp4"].read_bytes())
    growing.write_until(len(growing.content) // 3)
    service = VideoFilePipelineService(
        RecordingDagService(), isolation=isolation, decode_frame_timeout_seconds=0.5  # type: ignore[arg-type]
    )
    events = service.stream_run(DEFAULT_PIPELINE, growing.upload)
    assert isinstance(next(events), VideoOpened)
    first = next(events)
    assert isinstance(first, FrameProcessed) and first.frame_index == 0

    def finish_later() -> None:
        time.sleep(1.5)
        growing.write_until(len(growing.content))

    writer = threading.Thread(target=finish_later)
    writer.start()
    rest = [event for event in events if isinstance(event, FrameProcessed)]
    writer.join()
    growing.close()
    assert [event.frame_index for event in rest] == list(range(1, 150))


def test_an_upload_still_arriving_is_processed_one_frame_at_a_time(tmp_path: Path, containers: dict[str, Path]) -> None:
    """With two frames in flight, a finished frame's result would wait for the next one's bytes."""
    recorder = Recorder()
    dag = overlapping_dag(tmp_path / "pipelines", recorder, wait_seconds=0.05)
    growing = GrowingFile(tmp_path, containers["faststart.mp4"].read_bytes())
    growing.write_until(len(growing.content))
    service = VideoFilePipelineService(dag, isolation="thread")
    events = list(service.stream_run("overlapping", growing.upload, SamplingOptions(max_frames=5)))
    growing.close()
    assert [event.result["index"] for event in events if isinstance(event, FrameProcessed)] == list(range(5))
    assert recorder.most_inside == 1


def test_a_decoder_process_opens_a_fragmented_mp4_from_its_first_fragment(
    tmp_path: Path, containers: dict[str, Path]
) -> None:
    """The same frames as the stored file, the first from half of it; the count is not known yet."""
    source = containers["fragmented.mp4"]
    service = VideoFilePipelineService(RecordingDagService(), isolation="process")
    stored = list(service.stream_run(DEFAULT_PIPELINE, source))
    growing = GrowingFile(tmp_path, source.read_bytes(), "fragmented.mp4")
    half = len(growing.content) // 2
    growing.write_until(half)
    events = service.stream_run(DEFAULT_PIPELINE, growing.upload)
    thread, outcome = _in_thread(lambda: (next(events), next(events), growing.written))
    thread.join(WAIT)
    growing.write_until(len(growing.content))  # before any assertion, so a decoder still waiting ends
    thread.join(WAIT)
    rest = list(events)
    growing.close()
    assert "error" not in outcome, outcome["error"]
    opened, first, written_at_first_frame = outcome["value"]  # type: ignore[misc]
    assert written_at_first_frame == half

    def frames(of: list[object]) -> list[tuple[int, float, dict[str, object]]]:
        return [(e.frame_index, e.timestamp_seconds, e.result) for e in of if isinstance(e, FrameProcessed)]

    assert len(frames(stored)) == 150
    assert frames([first, *rest]) == frames(stored)
    [stored_opened] = [event for event in stored if isinstance(event, VideoOpened)]
    assert isinstance(opened, VideoOpened)
    assert (opened.info.frame_count, opened.info.duration_seconds) == (0, 0.0)
    assert opened.info == dataclasses.replace(stored_opened.info, frame_count=0, duration_seconds=0.0)


def test_the_ffmpeg_option_is_set_only_around_the_open_and_keeps_the_operators_own(
    tmp_path: Path, containers: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV reads FFmpeg options from the environment: ours joins the operator's, then is gone."""
    monkeypatch.setattr(capture_module, "_fragments_as_they_arrive", True)
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "analyzeduration;2000000")
    growing = GrowingFile(tmp_path, containers["fragmented.mp4"].read_bytes(), "fragmented.mp4")
    growing.write_until(len(growing.content) // 2)

    def open_and_read_one() -> tuple[int, int]:
        with open_video(growing.upload) as video:
            frame = next(video.frames(plan_window(SamplingOptions(), video.info.fps)))
            return frame.frame_index, video.info.frame_count

    thread, outcome = _in_thread(open_and_read_one)
    thread.join(WAIT)
    growing.write_until(len(growing.content))
    growing.close()
    assert outcome.get("value") == (0, 0), outcome.get("error")
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "analyzeduration;2000000"
