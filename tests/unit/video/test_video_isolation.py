"""Decoding in a decoder process: the same frames as in-process, bounded, and nothing left behind.

The frames are compared by pixel hash with the in-process path on the real sample clip, for
every sampling option; each exit path (end, file error, pipeline error, early close) is
checked for a leftover decoder process, shared-memory segment, thread or file descriptor.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService, RunningDagService
from fakes.media import garbage_bytes, presentation_times, read_frame_index, write_variable_rate_video
from fakes.waiting import frame_segments_left, wait_until
from videodag_service.errors import (
    DecoderKilled,
    StorageUnreadable,
    VideoFileMissing,
    VideoTooLarge,
    VideoUnreadable,
)
from videodag_service.video import (
    FrameProcessed,
    RunFinished,
    VideoFilePipelineService,
    VideoLimits,
    VideoOpened,
    missing_stored_copy_as_error,
    naming_the_upload,
    stored_copies,
)
from videodag_service.video.decoder_lifecycle import DECODER_PROCESS_NAME
from videodag_service.video.isolation import open_isolated_video, start_decoder_ahead
from videodag_service.video.reader import OpenedVideo
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window

SHM = Path("/dev/shm")

UNLIMITED = VideoLimits()


class HashingDag:
    """Reports a hash of every frame's pixels, its shape and its timestamp."""

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        image = payload["image"]
        return {
            "sha1": hashlib.sha1(image.tobytes()).hexdigest(),
            "shape": list(image.shape),
            "timestamp": payload["timestamp"],
            "content_index": read_frame_index(image) if image.shape[:2] == (48, 64) else None,
        }

SERVICE_ROOT = Path(__file__).resolve().parents[3] / "service"


def _events(isolation: str, path: Path, options: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
    service = VideoFilePipelineService(HashingDag(), isolation=isolation, **kwargs)  # type: ignore[arg-type]
    return list(service.stream_run(DEFAULT_PIPELINE, path, options))


def _frames(events: list[Any]) -> list[tuple[int, float, dict[str, Any]]]:
    return [(e.frame_index, e.timestamp_seconds, e.result) for e in events if isinstance(e, FrameProcessed)]


@dataclass(frozen=True)
class Leftovers:
    """What a run could leave behind in this process and on the machine."""

    decoders: frozenset[int]
    segments: frozenset[str]
    threads: frozenset[str]
    fds: int

    @classmethod
    def now(cls) -> Leftovers:
        # A ring closed while a view of it was alive (a failed run's traceback holding its
        # frame, say) stays mapped until the view goes; here the views of a finished run go
        # with the cycles that hold them.
        gc.collect()
        return cls(
            decoders=frozenset(p.pid for p in multiprocessing.active_children() if p.name == DECODER_PROCESS_NAME),
            segments=frozenset(frame_segments_left()),
            threads=frozenset(t.name for t in threading.enumerate()),
            fds=len(os.listdir("/proc/self/fd")),
        )


@pytest.fixture
def no_leftovers(sample_clip: Path) -> Iterator[None]:
    """Checks, after the test, that nothing a decoder process used is left (warmed up first:
    the forkserver and the resource tracker are started once per process, on purpose)."""
    _events("process", sample_clip, {"max_frames": 1})
    before = Leftovers.now()
    yield
    after = Leftovers.now()
    assert after.decoders == frozenset()
    assert after.segments == before.segments
    assert after.threads == before.threads
    assert after.fds == before.fds


@pytest.mark.parametrize(
    ("options", "first_indices"),
    [
        (None, [0, 1, 2]),
        ({"frame_stride": 7, "max_frames": 5}, [0, 7, 14, 21, 28]),
        ({"start_seconds": 2.0, "end_seconds": 6.5, "frame_stride": 3}, [20, 23, 26]),
        ({"start_seconds": 9.05, "max_frames": 4}, [91, 92, 93, 94]),
    ],
    ids=["all", "stride-max", "window-stride", "window-max"],
)
def test_the_decoder_process_gives_the_same_frames_as_in_process(
    sample_clip: Path, options: dict | None, first_indices: list[int]
) -> None:
    in_process = _events("thread", sample_clip, options)
    isolated = _events("process", sample_clip, options)
    assert isinstance(isolated[0], VideoOpened) and isolated[0].info == in_process[0].info
    frames = _frames(isolated)
    assert frames == _frames(in_process)
    assert [index for index, _, _ in frames][: len(first_indices)] == first_indices
    assert len({result["sha1"] for _, _, result in frames}) == len(frames)  # really different pixels
    summary = isolated[-1]
    assert isinstance(summary, RunFinished) and summary.summary.frames_processed == len(frames)
    assert summary.summary.decode_seconds > 0


def test_frames_carry_their_own_index_through_the_ring(make_video) -> None:
    path = make_video(60)
    frames = _frames(_events("process", path, {"frame_stride": 4}, decode_ahead_bytes=1))
    assert [index for index, _, _ in frames] == list(range(0, 60, 4))
    assert [result["content_index"] for _, _, result in frames] == list(range(0, 60, 4))
    assert [timestamp for _, timestamp, _ in frames] == pytest.approx([i / 25 for i in range(0, 60, 4)])


def test_file_errors_are_the_same_as_in_process(tmp_path: Path, make_video) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(garbage_bytes(20_000))
    errors = []
    for isolation in ("thread", "process"):
        with pytest.raises(VideoUnreadable) as raised:
            _events(isolation, garbage)
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "Unable to read video file 'garbage.mp4'" in errors[0]
    with pytest.raises(VideoTooLarge, match="100 frames"):
        _events("process", make_video(100), limits=VideoLimits(max_frames_total=99))


@pytest.mark.usefixtures("no_leftovers")
def test_a_missing_file_is_unreadable_to_a_library_caller_and_the_servers_trouble_for_its_own_copy(
    tmp_path: Path,
) -> None:
    """Every file the service decodes is its own stored copy: one a cleaner of temporary files
    removed was reported as INVALID_ARGUMENT VIDEO_UNREADABLE, telling the caller its video was
    bad and not to send it again. A library caller's path that does not exist stays its own
    mistake, a VideoUnreadable (and so a ValueError)."""
    stored = tmp_path / "videodag-upload-removed.mp4"
    for isolation in ("thread", "process"):
        with pytest.raises(ValueError, match=r"'videodag-upload-removed\.mp4': no such file") as raised:
            _events(isolation, stored)
        assert isinstance(raised.value, VideoUnreadable)
        with pytest.raises(VideoFileMissing) as missing, naming_the_upload(stored.name, "holiday.mp4"), \
                missing_stored_copy_as_error(stored):
            _events(isolation, stored)
        assert (missing.value.status_code, missing.value.reason) == ("UNAVAILABLE", "VIDEO_FILE_MISSING")
        assert str(missing.value).startswith("Unable to read video file 'holiday.mp4': the server's stored copy")


def test_a_stored_copy_the_server_may_not_read_is_the_servers_trouble_not_the_videos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data folder restored as another user: its videos, which the server may not read, were
    each refused as "not a video OpenCV can decode", the caller told its video was bad."""
    stored = tmp_path / "videodag-upload-restored.mp4"
    stored.write_bytes(garbage_bytes(5000))  # as OpenCV sees a file it may not open: nothing it can read
    monkeypatch.setattr(stored_copies, "readable_by_this_process", lambda path: False)  # tests run as root
    with pytest.raises(StorageUnreadable) as unreadable, naming_the_upload(stored.name, "holiday.mp4"), \
            missing_stored_copy_as_error(stored):
        _events("thread", stored)
    assert (unreadable.value.status_code, unreadable.value.reason) == ("INTERNAL", "STORAGE_UNREADABLE")
    assert str(unreadable.value).startswith("Unable to read video file 'holiday.mp4': the server may not read its "
                                            "own stored copy (permission denied")


@pytest.mark.usefixtures("no_leftovers")
def test_nothing_is_left_after_a_whole_run(sample_clip: Path) -> None:
    assert len(_frames(_events("process", sample_clip))) == 120


@pytest.mark.usefixtures("no_leftovers")
def test_nothing_is_left_when_the_file_is_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"RIFF" + garbage_bytes(5000))
    with pytest.raises(VideoUnreadable):
        _events("process", garbage)


@pytest.mark.usefixtures("no_leftovers")
def test_nothing_is_left_when_the_pipeline_fails_and_the_run_is_closed_once(sample_clip: Path) -> None:
    dag = RunningDagService(failures={3: RuntimeError("plugin blew up")})
    service = VideoFilePipelineService(dag, isolation="process")
    with pytest.raises(RuntimeError, match="plugin blew up"):
        service.run_on_file(DEFAULT_PIPELINE, sample_clip)
    assert dag.ledger.frames_per_run == [[0, 1, 2]] and dag.ledger.exit_errors == [RuntimeError]


@pytest.mark.usefixtures("no_leftovers")
def test_nothing_is_left_when_the_caller_closes_the_stream_early(sample_clip: Path) -> None:
    dag = RunningDagService()
    events = VideoFilePipelineService(dag, isolation="process").stream_run(DEFAULT_PIPELINE, sample_clip)
    assert isinstance(next(events), VideoOpened)
    assert isinstance(next(events), FrameProcessed)
    assert [p.name for p in multiprocessing.active_children()].count(DECODER_PROCESS_NAME) == 1
    # The segment was unlinked as soon as the decoder mapped it: nothing in /dev/shm even mid-run.
    assert frame_segments_left() == []
    events.close()
    assert dag.ledger.exit_errors == [GeneratorExit]


@pytest.mark.usefixtures("no_leftovers")
def test_nothing_is_left_when_an_unknown_pipeline_stops_the_run_before_decoding(sample_clip: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VideoFilePipelineService(RunningDagService(), isolation="process").run_on_file("nope", sample_clip)


# -- backpressure: a decoder that counts what it decoded, in a file next to the video ----------


class _CountingVideo(OpenedVideo):
    def frames(self, window, limits=UNLIMITED, **hooks):  # type: ignore[no-untyped-def]
        log = Path(str(self.path) + ".decoded")
        for frame in super().frames(window, limits, **hooks):
            with log.open("a") as file:
                file.write(f"{frame.frame_index}\n")
            yield frame


@contextmanager
def open_counting_video(path: Path) -> Iterator[OpenedVideo]:
    video = _CountingVideo(Path(path))
    try:
        yield video
    finally:
        video.close()


def test_a_slow_pipeline_holds_the_decoder_back_by_the_ring(make_video) -> None:
    path = make_video(200)
    log = Path(str(path) + ".decoded")
    paused = threading.Event()
    resume = threading.Event()

    class PausingDag(RecordingDagService):
        def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
            if payload["frame_index"] == 1:
                paused.set()
                resume.wait(10)  # held until the test has looked, however late it wakes
            return super().run_pipeline(pipeline_id, payload)

    # 1 byte of read-ahead: the smallest ring, 2 slots.
    service = VideoFilePipelineService(PausingDag(), isolation="process", decode_ahead_bytes=1,
                                       video_opener=open_counting_video)
    results: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: results.extend(service.run_on_file(DEFAULT_PIPELINE, path)))
    runner.start()
    assert paused.wait(10)
    time.sleep(0.6)  # time for a decoder that is not held back to run far ahead
    decoded_while_paused = len(log.read_text().split())
    resume.set()
    runner.join(30)
    # Frame 1 is in the pipeline's hands; the ring holds 2 more, and the decoder one in flight.
    assert decoded_while_paused <= 1 + 1 + 2 + 1
    assert [item["frame_index"] for item in results] == list(range(200))
    assert len(log.read_text().split()) == 200


def test_the_ring_is_sized_by_the_read_ahead_budget(make_video) -> None:
    path = make_video(30)
    small = _frames(_events("process", path, decode_ahead_bytes=1))
    large = _frames(_events("process", path, decode_ahead_bytes=64 * 1024 * 1024))
    assert small == large and len(small) == 30


def test_the_in_process_opener_is_used_in_both_modes(make_video) -> None:
    path = make_video(5)
    for isolation in ("thread", "process"):
        Path(str(path) + ".decoded").unlink(missing_ok=True)
        VideoFilePipelineService(HashingDag(), isolation=isolation, video_opener=open_counting_video).run_on_file(
            DEFAULT_PIPELINE, path)
        assert Path(str(path) + ".decoded").read_text().split() == [str(i) for i in range(5)]


class KeepingDag:
    """Keeps frames it was given, as a node that compares a frame with earlier ones would.

    keep: how many of the latest frames it holds on to (None: every frame). Reports whether
    each frame it still holds shows its own index: a ring slot written while lent would not.
    """

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self.kept: list[tuple[int, Any]] = []
        self.intact = True

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        image = payload["image"]
        self.kept.append((payload["frame_index"], image[:, :, 0]))  # a slice: a view of the frame
        if self.keep is not None:
            del self.kept[: len(self.kept) - self.keep]
        self.intact &= all(read_frame_index(_gray_to_bgr(kept)) == index for index, kept in self.kept)
        return {"content_index": read_frame_index(image)}


def _gray_to_bgr(channel: Any) -> Any:
    import numpy as np

    return np.repeat(channel[:, :, None], 3, axis=2)


SMALLEST_RING, LARGEST_RING = 1, 64 * 1024 * 1024  # read-ahead budgets: 2 and 4 slots of these frames


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("keep", "budget", "copies"),
    [
        (0, SMALLEST_RING, False),
        (0, LARGEST_RING, False),
        (1, SMALLEST_RING, True),  # 1 of 2 slots kept: copying keeps decoding ahead
        (1, LARGEST_RING, False),
        (2, LARGEST_RING, False),
        (None, SMALLEST_RING, True),
        (None, LARGEST_RING, True),
    ],
)
def test_frames_lent_from_the_ring_are_never_overwritten_while_a_pipeline_holds_them(
    make_video, keep: int | None, budget: int, copies: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames are lent to the pipeline without a copy; a pipeline that keeps too many of them
    for the decoder to go on gets copies from then on, and never a frame overwritten."""
    path = make_video(120)
    dag = KeepingDag(keep)
    service = VideoFilePipelineService(dag, isolation="process", decode_ahead_bytes=budget)  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="videodag_service.video.lent_slots"):
        results = service.run_on_file(DEFAULT_PIPELINE, path)
    assert [item["result"]["content_index"] for item in results] == list(range(120))
    assert dag.intact
    copied = any("copying frames out of the ring" in record.message for record in caplog.records)
    assert copied == copies


@pytest.mark.usefixtures("no_leftovers")
def test_the_engine_with_a_node_time_limit_holds_no_frame_between_frames(
    make_video, caplog: pytest.LogCaptureFixture
) -> None:
    """The node thread that enforces the time limit keeps nothing of a call: with one frame at
    a time, even the smallest ring (2 slots) lends every frame, none is copied. (With two
    frames in flight, a 2-slot ring copies the second: the decoder needs the other slot.)"""
    from videodag_service.dag import BUILTIN_PIPELINE_DIR, DagPipelineService

    dag = DagPipelineService.from_folder(BUILTIN_PIPELINE_DIR)
    dag.node_timeout_seconds = 30.0
    dag.frame_workers = 1
    service = VideoFilePipelineService(dag, isolation="process", decode_ahead_bytes=SMALLEST_RING)
    with caplog.at_level("INFO", logger="videodag_service.video.lent_slots"):
        results = service.run_on_file("frame_stats_v1", make_video(40))
    assert len(results) == 40
    assert not any("copying frames out of the ring" in record.message for record in caplog.records)


CONTENT_PIPELINE = """
id: content
version: "1"
nodes:
  - id: read
    plugin: test.content_index
    params: {wait_seconds: 5}
    inputs: {image: frame.image}
outputs:
  content_index: read.index
"""


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(("budget", "copies"), [(SMALLEST_RING, True), (LARGEST_RING, False)])
def test_two_frames_in_flight_are_lent_intact_and_copied_only_from_a_two_slot_ring(
    make_video, tmp_path: Path, budget: int, copies: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Two frames at once in the engine's lanes: each node call sees its own frame, never one
    the decoder overwrote; a 4-slot ring lends both, a 2-slot ring copies the second."""
    from fakes.fake_plugins import Recorder, make_registry
    from videodag_service.dag import DagPipelineService, load_pipeline_folder

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "content.yaml").write_text(CONTENT_PIPELINE)
    recorder = Recorder()
    dag = DagPipelineService(load_pipeline_folder(tmp_path / "pipelines", make_registry(recorder)), frame_workers=2)
    service = VideoFilePipelineService(dag, isolation="process", decode_ahead_bytes=budget)
    with caplog.at_level("INFO", logger="videodag_service.video.lent_slots"):
        results = service.run_on_file("content", make_video(60))
    assert [item["result"]["content_index"] for item in results] == list(range(60))
    assert recorder.most_inside == 2
    copied = any("copying frames out of the ring" in record.message for record in caplog.records)
    assert copied == copies


def test_frame_waiting_says_whether_the_decoder_has_sent_the_next_frame(make_video, no_leftovers: None) -> None:
    with open_isolated_video(make_video(3)) as video:
        assert not video.frame_waiting()  # the decoder waits for the request: nothing sent yet
        frames = video.frames(FrameWindow(), UNLIMITED)
        try:
            deadline = time.monotonic() + 10
            while not video.frame_waiting():
                assert time.monotonic() < deadline
                time.sleep(0.005)
            assert [frame.frame_index for frame in frames] == [0, 1, 2]
        finally:
            frames.close()


def test_a_time_window_on_a_variable_frame_rate_video_is_taken_by_presentation_time(
    tmp_path: Path, no_leftovers: None
) -> None:
    # The declared (average) rate puts the window at frames 6 to 35; the decoder finds the
    # frames presented in it, and the server checks them by their time.
    path = write_variable_rate_video(tmp_path / "variable_rate.mp4", 40)
    times = presentation_times(path)
    with open_isolated_video(path) as video:
        window = plan_window(SamplingOptions(start_seconds=1.0, end_seconds=7.0), video.info.fps)
        assert (window.first_index, window.stop_index) == (6, 36)
        frames = [(frame.frame_index, frame.timestamp_seconds) for frame in video.frames(window, UNLIMITED)]
    expected = [(index, seconds) for index, seconds in enumerate(times) if 1.0 <= seconds < 7.0]
    assert [index for index, _ in frames] == [index for index, _ in expected] == list(range(25, 35))
    assert [seconds for _, seconds in frames] == pytest.approx([seconds for _, seconds in expected])


class ReadinessDag:
    """A DAG service whose runs work through `process_frames`, noting what `ready` said
    once the consumer had given the decoder time to get ahead."""

    def __init__(self) -> None:
        self.ready_seen: list[bool] = []

    @contextmanager
    def open_run(self, pipeline_id: str) -> Iterator[Any]:
        yield self

    def process_frames(self, payloads: Iterator[Mapping[str, Any]], ready: Any = None) -> Iterator[Any]:
        for payload in payloads:
            deadline = time.monotonic() + 5
            while not ready() and time.monotonic() < deadline:
                time.sleep(0.005)
            self.ready_seen.append(ready())
            yield payload, {"index": payload["frame_index"]}

    def node_timings(self) -> list[Any]:
        return []


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_run_is_told_when_the_next_frame_is_decoded_already(make_video, isolation: str) -> None:
    dag = ReadinessDag()
    service = VideoFilePipelineService(dag, isolation=isolation)  # type: ignore[arg-type]
    results = service.run_on_file(DEFAULT_PIPELINE, make_video(4))
    assert [item["result"]["index"] for item in results] == [0, 1, 2, 3]
    assert dag.ready_seen == [True] * 4


def _live_decoders() -> list[multiprocessing.process.BaseProcess]:
    return [process for process in multiprocessing.active_children() if process.name == DECODER_PROCESS_NAME]


def test_a_decoder_started_ahead_waits_for_its_file_then_decodes_it_as_usual(make_video, no_leftovers: None) -> None:
    path = make_video(5)
    service = VideoFilePipelineService(HashingDag(), isolation="process")  # type: ignore[arg-type]
    with service.start_decoder_ahead() as decoder:
        assert decoder is not None
        decoder.wait_started()
        assert len(_live_decoders()) == 1  # started before any file was named
        events = list(service.stream_run(DEFAULT_PIPELINE, path, decoder=decoder))
        assert _live_decoders() == []  # the run ended it
        with pytest.raises(RuntimeError, match="serves one file"):
            decoder.take()
    assert _frames(events) == _frames(_events("process", path))


def test_a_decoder_started_ahead_and_never_used_is_killed_and_reaped(no_leftovers: None) -> None:
    service = VideoFilePipelineService(HashingDag(), isolation="process")  # type: ignore[arg-type]
    with service.start_decoder_ahead() as decoder:
        assert decoder is not None
        decoder.wait_started()
        assert len(_live_decoders()) == 1
    # no_leftovers: no decoder process, segment, thread or descriptor is left


def test_a_decoder_started_ahead_that_was_killed_while_waiting_fails_its_run_blaming_no_video(
    make_video, no_leftovers: None
) -> None:
    service = VideoFilePipelineService(HashingDag(), isolation="process")  # type: ignore[arg-type]
    with service.start_decoder_ahead() as decoder:
        assert decoder is not None
        decoder.wait_started()
        [process] = _live_decoders()
        process.kill()  # SIGKILL, as the out-of-memory killer sends it
        process.join(10)
        with pytest.raises(DecoderKilled, match="was killed \\(SIGKILL\\)"):
            list(service.stream_run(DEFAULT_PIPELINE, make_video(3), decoder=decoder))


def test_a_decoder_thread_has_no_process_to_start_ahead() -> None:
    service = VideoFilePipelineService(HashingDag(), isolation="thread")  # type: ignore[arg-type]
    with service.start_decoder_ahead() as decoder:
        assert decoder is None
        assert _live_decoders() == []


def test_a_decoder_started_ahead_refuses_an_upload_still_arriving(tmp_path: Path, no_leftovers: None) -> None:
    from videodag_service.video.growing_upload import GrowingUpload, new_abandon_signal

    arriving = GrowingUpload(tmp_path / "arriving.mp4", 1000, new_abandon_signal())
    with start_decoder_ahead() as started:
        refused = open_isolated_video(arriving, started=started)
        with pytest.raises(ValueError, match="stored file"):
            refused.__enter__()
        assert not started.taken  # still its own: killed and reaped when the block exits


def test_a_program_that_leaves_a_run_unfinished_still_exits(sample_clip: Path, tmp_path: Path) -> None:
    """A decoder ignores SIGTERM, which multiprocessing sends its daemon children at exit
    before it waits for them: a decoder left waiting by a frame iterator never closed made
    that wait endless."""
    script = tmp_path / "leaves_a_run.py"
    script.write_text(textwrap.dedent("""
        import sys

        from videodag_service.video.isolation import open_isolated_video
        from videodag_service.video.limits import VideoLimits
        from videodag_service.video.sampling import FrameWindow

        if __name__ == "__main__":
            opened = open_isolated_video(sys.argv[1])
            video = opened.__enter__()
            frames = video.frames(FrameWindow(), VideoLimits())
            first = next(frames)
            print(video._process.pid, flush=True)
    """))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SERVICE_ROOT), os.environ.get("PYTHONPATH", "")])}
    finished = subprocess.run([sys.executable, str(script), str(sample_clip)], capture_output=True, text=True,
                              timeout=60, env=environment, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    decoder_pid = int(finished.stdout.split()[0])
    assert wait_until(lambda: not Path(f"/proc/{decoder_pid}").exists())


def _parent_pid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_a_run_whose_decoders_forkserver_ended_blames_no_video_and_the_next_run_decodes(
    make_video, no_leftovers: None
) -> None:
    """The forkserver (killed, or ended by a fork or a descriptor refused at a pids or open-files
    limit) takes its decoders along, and reports their end as status 255: the run said the video
    was unreadable ("the decoder exited with status 255"), INVALID_ARGUMENT, which no caller retries."""
    path = make_video(300)
    service = VideoFilePipelineService(HashingDag(), isolation="process")  # type: ignore[arg-type]
    events = service.stream_run(DEFAULT_PIPELINE, path)
    delivered = [next(events)]
    [decoder] = _live_decoders()
    assert decoder.pid is not None
    os.kill(_parent_pid(decoder.pid), signal.SIGKILL)
    with pytest.raises(DecoderKilled) as raised:
        delivered.extend(events)
    assert len(_frames(delivered)) < 300
    assert str(raised.value) == (
        f"the decoder of {path.name!r} ended with the process that starts the server's decoders (killed, or at the "
        "server's limit of processes or open files); the video is not to blame: retry shortly")
    assert (raised.value.status_code, raised.value.reason) == ("UNAVAILABLE", "DECODER_KILLED")
    assert len(_frames(_events("process", make_video(3)))) == 3, "the next run has a forkserver again"
