"""Videos with a damaged stretch are decoded past it, as players do, where frame times tell the
indices (`frame_numbering`); elsewhere the run ends there and says so (`ended_early`)."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RunningDagService
from fakes.media import (
    presentation_times,
    read_frame_index,
    write_avi_with_a_damaged_frame,
    write_test_pattern,
)
from videodag_service.video import RunFinished, VideoFilePipelineService, open_video
from videodag_service.video.sampling import FrameWindow

FRAMES = 40


def damaged_avi(tmp_path: Path, damaged_index: int) -> Path:
    return write_avi_with_a_damaged_frame(tmp_path / "damaged.avi", FRAMES, damaged_index)


@pytest.mark.parametrize(("stride", "damaged_index"), [(1, 20), (3, 21)])
def test_a_damaged_avi_frame_is_decoded_past_with_only_its_index_missing(
    tmp_path: Path, stride: int, damaged_index: int
) -> None:
    with open_video(damaged_avi(tmp_path, damaged_index)) as video:
        frames = list(video.frames(FrameWindow(frame_stride=stride)))
        assert [frame.frame_index for frame in frames] == [
            index for index in range(0, FRAMES, stride) if index != damaged_index
        ]
        assert all(read_frame_index(frame.image) == frame.frame_index for frame in frames), "pixels match indices"
        assert all(frame.timestamp_seconds == pytest.approx(frame.frame_index / 25) for frame in frames)
        assert video.frames_unreadable == 1
        assert video.frames_in_video == FRAMES and not video.ended_early


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_summary_counts_the_frames_decoded_past(tmp_path: Path, isolation: str) -> None:
    service = VideoFilePipelineService(RunningDagService(), isolation=isolation)  # type: ignore[arg-type]
    *_, finished = service.stream_run(DEFAULT_PIPELINE, damaged_avi(tmp_path, 20))
    assert isinstance(finished, RunFinished)
    assert finished.summary.frames_unreadable == 1
    assert finished.summary.frames_processed == FRAMES - 1
    assert finished.summary.frames_in_video == FRAMES and not finished.summary.ended_early


def test_an_mp4_with_b_frames_cut_short_gives_every_frame_its_decoder_still_held(
    sample_clip: Path, tmp_path: Path
) -> None:
    """Cut mid-GOP, the decoder holds frames shown after one it lost: the same as FFmpeg decodes."""
    cut = tmp_path / "cut.mp4"
    content = sample_clip.read_bytes()
    cut.write_bytes(content[: int(len(content) * 0.7109375)])
    with open_video(cut) as video:
        frames = list(video.frames(FrameWindow()))
        fps = video.info.fps
        assert video.ended_early
    times = [frame.timestamp_seconds for frame in frames]
    assert times == pytest.approx(presentation_times(cut), abs=1e-6)
    assert [frame.frame_index for frame in frames] == [round(seconds * fps) for seconds in times]
    assert video.frames_unreadable == frames[-1].frame_index + 1 - len(frames) > 0


def frames_after_the_first_failed_grab(path: Path) -> int:
    """What OpenCV alone decodes after its first failed grab, grabbing on as a player would."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        while capture.grab():
            pass
        return sum(capture.grab() for _ in range(300))
    finally:
        capture.release()


def test_a_webm_damaged_midway_ends_there_and_says_it_ended_early_when_frames_follow(tmp_path: Path) -> None:
    """WebM frame times do not tell how many frames a damaged stretch lost: the run cannot go
    on, but it used to end as if the video had, `ended_early` false."""
    source = write_test_pattern(tmp_path / "source.webm", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                                "-cpu-used", "8", "-g", "50", size="320x240", seconds=20.0)
    content = source.read_bytes()
    cases = 0
    for seed in range(16):  # 4 of these draws make a grab fail with frames after it (imageio-ffmpeg 0.8.1)
        data = bytearray(content)
        noise = random.Random(seed).randbytes(20_000)
        data[len(data) // 2: len(data) // 2 + len(noise)] = noise
        damaged = tmp_path / f"damaged_{seed}.webm"
        damaged.write_bytes(bytes(data))
        if frames_after_the_first_failed_grab(damaged) == 0:
            continue  # this damage made no grab fail, or nothing decodable follows it
        cases += 1
        with open_video(damaged) as video:
            frames = list(video.frames(FrameWindow()))
            assert video.ended_early, seed
            assert video.frames_in_video == len(frames) < 500 and video.frames_unreadable == 0
    assert cases > 0, "no damage made a grab fail with frames after it: the test checks nothing"
