"""Videos with a damaged stretch are decoded past it, as players do, where frame times tell the
indices (`frame_numbering`); elsewhere the run ends there and says so (`ended_early`)."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import cv2
import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RunningDagService
from fakes.media import (
    ffmpeg_executable,
    presentation_times,
    read_frame_index,
    write_avi_with_a_damaged_frame,
    write_test_pattern,
)
from videodag_service.video import RunFinished, VideoFilePipelineService, avi_index, open_video
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


def test_the_containers_index_is_read_once_a_video_however_many_stretches_are_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stretch of damage asks how frames past it are numbered; the index was read again for
    each, and an upload's index can take a second to read."""
    reads: list[object] = []
    read_index = avi_index.seeks_exactly
    monkeypatch.setattr(avi_index, "seeks_exactly", lambda path: reads.append(path) or read_index(path))
    with open_video(damaged_avi(tmp_path, 20)) as video:
        asked = [video._numbering_past_damage(index, (index - 1) / 25) for index in (5, 20, 31)]
    assert all(numbering is not None and numbering.index_at((index - 1) / 25) == index - 1
               for numbering, index in zip(asked, (5, 20, 31), strict=True))
    assert len(reads) == 1


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


def h264_with_b_frames(tmp_path: Path, seconds: float) -> Path:
    return write_test_pattern(tmp_path / "source.mp4", "-c:v", "libx264", "-bf", "3", "-g", "25", "-pix_fmt",
                              "yuv420p", "-movflags", "+faststart", size="320x240", seconds=seconds)


def zeroed(source: Path, start: int, length: int) -> Path:
    data = bytearray(source.read_bytes())
    data[start: start + length] = bytes(length)
    damaged = source.with_name(f"damaged_{start}_{length}{source.suffix}")
    damaged.write_bytes(bytes(data))
    return damaged


def test_an_mp4_whose_first_frames_are_damaged_is_decoded_from_the_next_it_can(tmp_path: Path) -> None:
    """It was refused as holding no decodable frame: the first grab failed, and nothing came
    before it to number the frames after by."""
    source = h264_with_b_frames(tmp_path, 6.0)
    damaged = zeroed(source, source.read_bytes().index(b"mdat") + 200, 2000)  # inside the first key frame
    with open_video(damaged) as video:
        frames = list(video.frames(FrameWindow()))
        indices = [frame.frame_index for frame in frames]
        assert indices[0] > 0 and indices[-1] == 149
        assert all(frame.frame_index == round(frame.timestamp_seconds * 25) for frame in frames)
        assert indices == sorted(set(indices))
        assert video.frames_unreadable == 150 - len(frames)
        assert video.frames_in_video == 150 and not video.ended_early


def test_a_stride_keeps_to_its_grid_when_damage_covers_the_start_of_the_window(tmp_path: Path) -> None:
    source = h264_with_b_frames(tmp_path, 8.0)
    mdat = source.read_bytes().index(b"mdat")
    damaged = zeroed(source, mdat + (source.stat().st_size - mdat) // 4, 30_000)  # about frames 45-60
    window = FrameWindow(start_seconds=2.0, end_seconds=4.0, frame_stride=5)
    with open_video(source) as video:
        whole = [frame.frame_index for frame in video.frames(window)]
    with open_video(damaged) as video:
        indices = [frame.frame_index for frame in video.frames(window)]
        lost_in_window = video.frames_unreadable
    assert whole == list(range(50, 100, 5))
    assert indices and indices != whole, "the damage reached the window: the test checks nothing"
    assert set(indices) <= set(whole), "sampled on the grid of the undamaged video"
    assert 0 < lost_in_window <= 50, "only frames of the window are counted"


def test_a_matroska_file_whose_sound_holds_grabs_back_is_read_whole(tmp_path: Path) -> None:
    """OpenCV gives a grab up after 4,096 packets of the other streams. Here the first grab
    fails (the file was refused as holding no frame), and so does the one after the last
    frame, before the frames the decoder still held: neither is damage, nor an early end."""
    path = tmp_path / "sound_after.mkv"
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
                    "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=150", "-c:v", "libx264", "-bf", "3",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k", str(path)], check=True, timeout=120)
    with open_video(path) as video:
        frames = list(video.frames(FrameWindow()))
        assert [frame.frame_index for frame in frames] == list(range(50))
        assert [frame.timestamp_seconds for frame in frames] == pytest.approx(presentation_times(path), abs=1e-6)
        assert not video.ended_early and video.frames_in_video == 50
