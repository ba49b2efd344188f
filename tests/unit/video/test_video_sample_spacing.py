"""`sample_spacing`: which MP4s keep their frames evenly spaced, read from the sample table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fakes.media import write_test_pattern
from videodag_service.video import open_video
from videodag_service.video.sample_spacing import _evenly_spaced, frames_evenly_spaced


def _evenly_spaced_as_declared(path: Path) -> bool | None:
    """`frames_evenly_spaced` given the frame count FFmpeg declares, as the reader gives it."""
    with open_video(path) as video:
        return frames_evenly_spaced(path, video.info.frame_count)


def test_a_rate_its_timescale_cannot_hold_exactly_is_still_even(tmp_path: Path) -> None:
    """29.97 fps in milliseconds: frames last 33 or 34 ms, a run of the table each."""
    path = write_test_pattern(tmp_path / "ntsc.mp4", "-c:v", "libx264", "-video_track_timescale", "1000",
                              size="160x120", rate="30000/1001", seconds=4.0)
    assert _evenly_spaced_as_declared(path) is True


def test_a_last_frame_of_another_duration_is_still_even(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "even.mov", "-c:v", "libx264", "-bf", "2", size="160x120", seconds=2.0)
    assert _evenly_spaced_as_declared(path) is True


@pytest.mark.parametrize(("runs", "even"), [
    ([[300, 512]], True),
    ([[299, 512], [1, 500]], True),  # a last frame a little shorter, as muxers round it
    ([[299, 512], [1, 1]], False),  # much shorter or longer: it moves the average rate, OpenCV's,
    ([[299, 512], [1, 0]], False),  # and every frame's place on that rate's grid
    ([[299, 512], [1, 1536]], False),
    ([[1, 33], [1, 34]] * 150, True),  # 29.97 fps in milliseconds
    ([[100, 512], [2, 1024], [198, 512]], False),  # two frames dropped
])
def test_frames_are_even_when_each_is_near_the_average_rates_grid(runs: list[list[int]], even: bool) -> None:
    assert _evenly_spaced(np.array(runs, dtype=np.int64)) is even


def test_a_frame_dropped_in_a_long_video_is_uneven(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "one_dropped.mp4", "-vf", "select='not(eq(n,200))'", "-fps_mode",
                              "passthrough", "-c:v", "libx264", size="160x120", seconds=20.0)
    assert _evenly_spaced_as_declared(path) is False


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x08moov", b"not an mp4 at all"])
def test_a_file_without_a_table_tells_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.mp4"
    path.write_bytes(content)
    assert frames_evenly_spaced(path, 100) is None


def test_a_table_claiming_more_runs_than_its_box_holds_tells_nothing(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "even.mp4", "-c:v", "libx264", size="160x120", seconds=1.0)
    data = bytearray(path.read_bytes())
    table = data.index(b"stts")
    declared = int(data[table + 8:table + 12].hex(), 16)  # runs of one frame each here: a run a frame
    data[table + 8:table + 12] = (0x7FFFFFFF).to_bytes(4, "big")  # after the type: version and flags, then the count
    path.write_bytes(bytes(data))
    assert frames_evenly_spaced(path, 0x7FFFFFFF) is None
    assert frames_evenly_spaced(path, declared) is None


def test_a_table_of_other_frames_than_declared_tells_nothing_and_is_not_read_past_their_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upload's table of 8 million runs cost 4 s and 384 MB before the frame count was
    checked: a table of more runs than the declared frames is not read, one counting other
    frames (or wrapping around int64 with a run of billions) tells nothing."""
    path = write_test_pattern(tmp_path / "even.mp4", "-c:v", "libx264", size="160x120", seconds=2.0)
    with open_video(path) as video:
        declared = video.info.frame_count
    assert frames_evenly_spaced(path, declared) is True
    assert frames_evenly_spaced(path, declared + 1) is None  # the table counts other frames
    assert frames_evenly_spaced(path, 0) is None  # more runs than frames: not read
    data = bytearray(path.read_bytes())
    table = data.index(b"stts")
    data[table + 12:table + 16] = (2**32 - 1).to_bytes(4, "big")  # the first run's count: billions
    path.write_bytes(bytes(data))
    assert frames_evenly_spaced(path, declared) is None
