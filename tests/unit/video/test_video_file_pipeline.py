"""VideoFilePipelineService over real files with fake DAG services: results, sampling, errors, runs."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import pytest

import videodag_service
from fakes.capture import spy_on_captures
from fakes.fake_dag import DEFAULT_PIPELINE, MutatingDagService, RecordingDagService, RunningDagService
from fakes.fake_plugins import Recorder, overlapping_dag
from fakes.media import read_frame_index, write_test_pattern
from videodag_service import VideoFilePipelineService  # as its callers import it
from videodag_service.errors import InvalidOptions, VideoTooLarge, VideoUnreadable
from videodag_service.video import (
    FrameProcessed,
    RunFinished,
    SamplingOptions,
    VideoLimits,
    VideoOpened,
    open_video,
)
from videodag_service.video.capture import Capture


def test_the_package_gives_the_video_layers_own_class() -> None:
    from videodag_service import video

    assert VideoFilePipelineService is video.VideoFilePipelineService
    with pytest.raises(AttributeError, match="no attribute 'VideoPipeline'"):
        videodag_service.VideoPipeline  # noqa: B018  # a misspelt name stays an AttributeError


class ContentIndexDag:
    """Reports the index the frame's pixels carry, to check sampling against the real frames."""

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"content_index": read_frame_index(payload["image"]), "timestamp": payload["timestamp"]}


@pytest.fixture(scope="module")
def sample_clip_means(sample_clip: Path) -> list[float]:
    """Mean pixel value of every frame, decoded independently with plain OpenCV."""
    capture = cv2.VideoCapture(str(sample_clip), cv2.CAP_FFMPEG)
    means = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            means.append(float(image.mean()))
    finally:
        capture.release()
    return means


def _indices(results: list[dict[str, Any]]) -> list[int]:
    return [item["frame_index"] for item in results]


def test_every_frame_of_the_sample_clip_is_processed_in_order(
    sample_clip: Path, sample_clip_means: list[float]
) -> None:
    dag = RecordingDagService()
    results = VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, sample_clip)
    assert len(sample_clip_means) == 120
    assert _indices(results) == list(range(120))
    assert set(results[0]) == {"frame_index", "result"}
    assert [item["result"]["mean"] for item in results] == pytest.approx(sample_clip_means)
    assert [item["result"]["timestamp"] for item in results] == pytest.approx([i / 10 for i in range(120)])
    assert {tuple(seen.shape) for seen in dag.seen} == {(576, 768, 3)}


def test_a_generated_thousand_frame_video_is_processed_frame_for_frame(thousand_frame_video: Path) -> None:
    results = VideoFilePipelineService(ContentIndexDag()).run_on_file(DEFAULT_PIPELINE, thousand_frame_video)
    assert _indices(results) == list(range(1000))
    assert [item["result"]["content_index"] for item in results] == list(range(1000))


@pytest.mark.parametrize(
    ("service_options", "call_options", "expected"),
    [
        ({"frame_stride": 5, "max_frames": 3}, None, [0, 5, 10]),
        ({}, {"frame_stride": 5, "max_frames": 3}, [0, 5, 10]),
        ({}, SamplingOptions(frame_stride=5, max_frames=3), [0, 5, 10]),
        ({"frame_stride": 5}, {"max_frames": 4}, [0, 5, 10, 15]),
        ({"frame_stride": 5, "max_frames": 3}, SamplingOptions(max_frames=2), [0, 1]),
        ({"frame_stride": 0, "max_frames": 0}, {"frame_stride": 400}, [0, 400, 800]),
    ],
)
def test_stride_and_max_frames(
    thousand_frame_video: Path, service_options: dict, call_options: Any, expected: list[int]
) -> None:
    service = VideoFilePipelineService(ContentIndexDag(), **service_options)
    results = service.run_on_file(DEFAULT_PIPELINE, thousand_frame_video, call_options)
    assert _indices(results) == expected
    assert [item["result"]["content_index"] for item in results] == expected


def test_a_time_window_on_the_sample_clip(sample_clip: Path, sample_clip_means: list[float]) -> None:
    service = VideoFilePipelineService(RecordingDagService())
    results = service.run_on_file(DEFAULT_PIPELINE, sample_clip, {"start_seconds": 1.0, "end_seconds": 2.0})
    assert _indices(results) == list(range(10, 20))
    assert [item["result"]["mean"] for item in results] == pytest.approx(sample_clip_means[10:20])
    assert results[0]["result"]["timestamp"] == pytest.approx(1.0)


def test_window_then_stride_then_max_frames(make_video) -> None:
    path = make_video(300, fps=25.0, fourcc="mp4v")
    options = SamplingOptions(frame_stride=7, max_frames=5, start_seconds=2.0, end_seconds=10.0)
    results = VideoFilePipelineService(ContentIndexDag()).run_on_file(DEFAULT_PIPELINE, path, options)
    assert _indices(results) == [50, 57, 64, 71, 78]
    assert [item["result"]["content_index"] for item in results] == [50, 57, 64, 71, 78]
    timestamps = [item["result"]["timestamp"] for item in results]
    assert timestamps == pytest.approx([i / 25 for i in _indices(results)])


def test_a_window_that_ends_before_max_frames(make_video) -> None:
    results = VideoFilePipelineService(ContentIndexDag()).run_on_file(
        DEFAULT_PIPELINE, make_video(100), {"start_seconds": 3.0, "end_seconds": 3.2, "max_frames": 50}
    )
    assert _indices(results) == [75, 76, 77, 78, 79]


@pytest.mark.parametrize(
    "options",
    [
        {"frame_stride": -1},
        {"max_frames": -1},
        {"start_seconds": -1.0},
        {"start_seconds": 2.0, "end_seconds": 1.0},
    ],
)
def test_invalid_options_are_refused_before_the_file_is_touched(tmp_path: Path, options: dict) -> None:
    service = VideoFilePipelineService(RecordingDagService())
    with pytest.raises(InvalidOptions):
        service.stream_run(DEFAULT_PIPELINE, tmp_path / "does-not-exist.mp4", options)
    with pytest.raises(InvalidOptions):
        service.run_on_file(DEFAULT_PIPELINE, tmp_path / "does-not-exist.mp4", options)


def test_invalid_constructor_defaults_are_refused() -> None:
    with pytest.raises(InvalidOptions):
        VideoFilePipelineService(RecordingDagService(), frame_stride=-2)


def test_an_unknown_pipeline_error_propagates_unchanged(sample_clip: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'nope' not found"):
        VideoFilePipelineService(RecordingDagService()).run_on_file("nope", sample_clip)


@pytest.mark.parametrize("error_type", [RuntimeError, ValueError, KeyError])
def test_a_plugin_error_propagates_unchanged(make_video, error_type: type[Exception]) -> None:
    failing_frame = random.Random(error_type.__name__).randrange(40)
    error = error_type(f"plugin exploded on frame {failing_frame}")
    dag = RecordingDagService(failures={failing_frame: error})
    with pytest.raises(error_type) as raised:
        VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, make_video(40))
    assert raised.value is error
    assert [seen.frame_index for seen in dag.seen] == list(range(failing_frame + 1))


def test_a_slow_service_still_gets_ordered_complete_results(make_video) -> None:
    jitter = random.Random(7)
    dag = RecordingDagService(delay_seconds=lambda frame_index: jitter.uniform(0.0, 0.01))
    results = VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, make_video(30))
    assert _indices(results) == list(range(30))
    assert [item["result"]["frame_index"] for item in results] == list(range(30))


def test_a_service_that_mutates_its_results_and_the_payload_cannot_rewrite_history(
    sample_clip: Path, sample_clip_means: list[float]
) -> None:
    service = MutatingDagService()
    results = VideoFilePipelineService(service).run_on_file(DEFAULT_PIPELINE, sample_clip, {"max_frames": 5})
    assert _indices(results) == [0, 1, 2, 3, 4]
    assert [item["result"]["frame_index"] for item in results] == [0, 1, 2, 3, 4]
    assert [item["result"]["history"] for item in results] == [list(range(i + 1)) for i in range(5)]
    # The service tries to zero each image after reading it: frames are read only, and each is a fresh decode.
    assert service.scribbles_refused == 5
    assert [item["result"]["mean"] for item in results] == pytest.approx(sample_clip_means[:5])
    assert len({id(item["result"]) for item in results}) == 5


def test_a_result_that_is_not_a_mapping_is_a_type_error(make_video) -> None:
    class ListDag:
        def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> Any:
            return [payload["frame_index"]]

    with pytest.raises(TypeError, match="not a mapping"):
        VideoFilePipelineService(ListDag()).run_on_file(DEFAULT_PIPELINE, make_video(3))


def test_a_service_without_either_protocol_is_refused(make_video) -> None:
    with pytest.raises(TypeError, match="neither open_run"):
        VideoFilePipelineService(object()).run_on_file(DEFAULT_PIPELINE, make_video(3))  # type: ignore[arg-type]


def test_a_corrupted_mp4_is_unreadable(sample_clip: Path, tmp_path: Path) -> None:
    data = bytearray(sample_clip.read_bytes())
    moov = data.find(b"moov")
    assert moov > 0
    data[: moov + 2000] = random.Random(3).randbytes(moov + 2000)
    corrupted = tmp_path / "corrupted.mp4"
    corrupted.write_bytes(bytes(data))
    dag = RecordingDagService()
    with pytest.raises(ValueError, match="Unable to read video file") as raised:
        VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, corrupted)
    assert isinstance(raised.value, VideoUnreadable)
    assert dag.seen == []


def test_events_come_in_order_with_a_summary(sample_clip: Path) -> None:
    dag = RunningDagService()
    events = list(VideoFilePipelineService(dag, frame_stride=4).stream_run(DEFAULT_PIPELINE, sample_clip))
    opened, *middle, finished = events
    assert isinstance(opened, VideoOpened) and opened.info.frame_count == 120
    frames = [event for event in middle if isinstance(event, FrameProcessed)]
    assert len(frames) == len(middle)
    assert [event.frame_index for event in frames] == list(range(0, 120, 4))
    assert [event.timestamp_seconds for event in frames] == pytest.approx([i / 10 for i in range(0, 120, 4)])
    assert isinstance(finished, RunFinished)
    summary = finished.summary
    assert summary.pipeline_id == DEFAULT_PIPELINE and summary.frames_processed == 30
    assert 0 < summary.decode_seconds <= summary.wall_seconds
    assert [(timing.node_id, timing.calls) for timing in summary.node_timings] == [("summary", 30)]


def test_one_run_per_video_keeps_its_state_and_is_closed_once(make_video) -> None:
    dag = RunningDagService()
    service = VideoFilePipelineService(dag)
    first = service.run_on_file(DEFAULT_PIPELINE, make_video(6))
    second = service.run_on_file(DEFAULT_PIPELINE, make_video(4, fps=10.0))
    assert [item["result"]["frames_seen_in_run"] for item in first] == [1, 2, 3, 4, 5, 6]
    assert [item["result"]["frames_seen_in_run"] for item in second] == [1, 2, 3, 4]
    assert dag.ledger.opened == dag.ledger.closed == [DEFAULT_PIPELINE, DEFAULT_PIPELINE]
    assert dag.ledger.exit_errors == [None, None]


def test_the_run_is_closed_once_when_a_frame_fails(make_video) -> None:
    error = RuntimeError("tracker lost its mind")
    dag = RunningDagService(failures={3: error})
    with pytest.raises(RuntimeError) as raised:
        VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, make_video(10))
    assert raised.value is error
    assert len(dag.ledger.opened) == len(dag.ledger.closed) == 1
    assert dag.ledger.exit_errors == [RuntimeError]
    assert dag.ledger.frames_per_run == [[0, 1, 2]]


def test_closing_the_stream_early_closes_the_run_and_releases_the_decoder(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(50)
    spies = spy_on_captures(monkeypatch)
    dag = RunningDagService()
    # The smallest read-ahead: one frame waits in the hand-off, one more in the decoder's hands.
    events = VideoFilePipelineService(dag, decode_ahead_bytes=1).stream_run(DEFAULT_PIPELINE, path)
    assert isinstance(next(events), VideoOpened)
    assert isinstance(next(events), FrameProcessed)
    assert dag.ledger.closed == [] and not spies[0].released
    events.close()
    assert len(dag.ledger.opened) == len(dag.ledger.closed) == 1
    assert dag.ledger.exit_errors == [GeneratorExit]
    assert spies[0].released and spies[0].retrieves <= 1 + 2


def test_an_unknown_pipeline_with_runs_decodes_nothing(make_video, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_video(10)
    spies = spy_on_captures(monkeypatch)
    events = VideoFilePipelineService(RunningDagService()).stream_run("nope", path)
    with pytest.raises(FileNotFoundError):
        next(events)
    assert spies[0].grabs == 0 and spies[0].released


def test_a_video_over_the_limits_is_refused_before_decoding_or_opening_a_run(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(100)
    spies = spy_on_captures(monkeypatch)
    dag = RunningDagService()
    service = VideoFilePipelineService(dag, limits=VideoLimits(max_frames_total=99))
    with pytest.raises(VideoTooLarge, match="100 frames"):
        service.run_on_file(DEFAULT_PIPELINE, path)
    assert spies[0].grabs == 0 and spies[0].released
    assert dag.ledger.opened == []


def test_an_estimated_frame_count_over_the_limit_is_no_refusal_the_frames_are_counted(tmp_path: Path) -> None:
    """A Matroska file's count is the duration times the rate: 60 frames, the last 100 s later
    (a camera that records bursts), are estimated at 6,000."""
    path = write_test_pattern(tmp_path / "bursts.mkv", "-vf", "setpts='if(eq(N,59),100/TB,PTS)'",
                              "-fps_mode", "passthrough", "-c:v", "libx264", size="160x120", seconds=1.0,
                              rate="60")
    with open_video(path) as video:
        assert video.info.frame_count > 5000 and video.info.frame_count_is_estimate
    service = VideoFilePipelineService(RunningDagService(), limits=VideoLimits(max_frames_total=1000))
    assert len(service.run_on_file(DEFAULT_PIPELINE, path)) == 60
    counted = VideoFilePipelineService(RunningDagService(), limits=VideoLimits(max_frames_total=50))
    with pytest.raises(VideoTooLarge, match="frame"):
        counted.run_on_file(DEFAULT_PIPELINE, path)


def test_a_time_window_on_a_video_without_frame_rate_is_unreadable(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some containers (raw streams, broken headers) declare no frame rate; simulate one.
    real_probe = Capture.probe
    monkeypatch.setattr(Capture, "probe", lambda self: dataclasses.replace(real_probe(self), fps=0.0))
    path = make_video(10)
    service = VideoFilePipelineService(ContentIndexDag())
    with pytest.raises(VideoUnreadable, match="frame rate is unknown"):
        service.run_on_file(DEFAULT_PIPELINE, path, {"start_seconds": 0.1})
    # Without a window the frames are still processed, with the decoder's own timestamps.
    results = service.run_on_file(DEFAULT_PIPELINE, path)
    assert [item["result"]["content_index"] for item in results] == list(range(10))
    assert [item["result"]["timestamp"] for item in results] == pytest.approx([i / 25 for i in range(10)])



@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_frames_of_a_stored_file_pass_the_frame_independent_nodes_two_at_a_time(
    make_video, tmp_path: Path, isolation: str
) -> None:
    recorder = Recorder()
    dag = overlapping_dag(tmp_path / "pipelines", recorder, wait_seconds=5.0)
    service = VideoFilePipelineService(dag, isolation=isolation)  # type: ignore[arg-type]
    results = service.run_on_file("overlapping", make_video(12))
    assert [result["result"]["index"] for result in results] == list(range(12))
    assert recorder.most_inside == 2


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_summary_says_whether_the_video_ended_early(sample_clip: Path, tmp_path: Path, isolation: str) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(sample_clip.read_bytes()[:400_000])
    service = VideoFilePipelineService(RunningDagService(), isolation=isolation)  # type: ignore[arg-type]
    for path, ended_early in ((cut, True), (sample_clip, False)):
        *_, finished = service.stream_run(DEFAULT_PIPELINE, path)
        assert isinstance(finished, RunFinished)
        assert finished.summary.ended_early is ended_early
        assert (finished.summary.frames_processed < 120) is ended_early


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_summary_counts_the_frames_of_a_video_read_to_its_end(
    sample_clip: Path, tmp_path: Path, isolation: str
) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(sample_clip.read_bytes()[:400_000])
    service = VideoFilePipelineService(RunningDagService(), isolation=isolation)  # type: ignore[arg-type]
    runs = [
        (sample_clip, {"frame_stride": 5}, 120),  # every frame counted, one in five processed
        (cut, {}, "processed"),  # up to the frame that could not be read
        (sample_clip, {"max_frames": 10}, None),  # stopped before the end: not counted
        (sample_clip, {"end_seconds": 5.0}, None),
    ]
    for path, options, expected in runs:
        *_, finished = service.stream_run(DEFAULT_PIPELINE, path, options)
        assert isinstance(finished, RunFinished)
        summary = finished.summary
        if expected == "processed":
            assert 10 < summary.frames_processed < 120 and summary.frames_in_video == summary.frames_processed
        else:
            assert summary.frames_in_video == expected
