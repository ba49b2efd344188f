"""`frame_times`: every frame's presentation time, read from an MP4's sample table, as FFmpeg presents it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fakes.media import presentation_times, write_test_pattern, write_trimmed_copy
from videodag_service.media.mp4_boxes import sample_runs
from videodag_service.video import probe_video
from videodag_service.video.frame_times import frame_times


def _declared(path: Path) -> int:
    """The frame count FFmpeg declares for the track it decodes, which the reader passes."""
    return probe_video(path).frame_count


DROPPED = ("-vf", "select='not(between(n,30,32)+between(n,70,71))'", "-fps_mode", "passthrough")


@pytest.mark.parametrize(("name", "options"), [
    ("dropped_bframes.mp4", (*DROPPED, "-c:v", "libx264", "-bf", "3", "-g", "25")),
    ("dropped_no_edit_list.mp4", (*DROPPED, "-c:v", "libx264", "-bf", "2", "-use_editlist", "0")),
    ("dropped_quicktime_600.mov", (*DROPPED, "-c:v", "libx264", "-video_track_timescale", "600")),
    ("dropped_mpeg4.mp4", (*DROPPED, "-c:v", "mpeg4", "-bf", "2")),
    ("delayed.mp4", (*DROPPED, "-c:v", "libx264", "-output_ts_offset", "1.5")),  # an empty edit first
])
def test_the_table_gives_each_frames_time_as_ffmpeg_presents_it(tmp_path: Path, name: str,
                                                                  options: tuple[str, ...]) -> None:
    path = write_test_pattern(tmp_path / name, *options, size="160x120", rate="10", seconds=10.0)
    times = frame_times(path, _declared(path))
    assert times is not None
    decoded = presentation_times(path)
    assert len(times) == len(decoded) == 95
    assert [times.seconds(index) for index in range(len(times))] == pytest.approx(
        [seconds - decoded[0] for seconds in decoded], abs=1e-3)


def test_a_frame_is_found_by_its_exact_time_and_only_by_it(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "dropped.mp4", *DROPPED, "-c:v", "libx264", size="160x120", rate="10",
                              seconds=10.0)
    times = frame_times(path, _declared(path))
    assert times is not None and times.timescale == 10240
    assert times.index_at(2.9) == 29 and times.index_at(3.3) == 30  # frames 30-32 of the source were dropped
    assert times.index_at(3.0) is None
    assert times.index_at(3.3 + 0.3 / 10240) is None and times.index_at(3.3 + 0.2 / 10240) == 30
    assert times.last_before(3.3) == 29 and times.last_before(3.3001) == 30
    assert times.last_before(0.0) == -1


def test_a_file_cut_with_stream_copy_is_refused(tmp_path: Path) -> None:
    """Its edit list hides frames before the cut: which of them FFmpeg still shows is its own affair."""
    source = write_test_pattern(tmp_path / "source.mp4", *DROPPED, "-c:v", "libx264", "-g", "30", size="160x120",
                                rate="10", seconds=10.0)
    cut = write_trimmed_copy(source, tmp_path / "cut.mp4", start_seconds=4.33, seconds=4.0)
    assert frame_times(source, _declared(source)) is not None
    assert frame_times(cut, _declared(cut)) is None


def test_frames_at_one_time_are_refused(tmp_path: Path) -> None:
    """B-frames muxed with their rate halved for a few frames: several frames share a time."""
    path = write_test_pattern(tmp_path / "bunched.mp4", "-vf",
                              "setpts='if(between(N,40,49),(40+(N-40)/2)/10,N/10)/TB'", "-fps_mode", "passthrough",
                              "-c:v", "libx264", "-g", "30", size="160x120", rate="10", seconds=6.0)
    assert frame_times(path, _declared(path)) is None


def _with_box_field(path: Path, box: bytes, offset: int, value: int) -> Path:
    """A copy with the 32-bit field `offset` bytes after the type of the first `box` set to `value`."""
    data = bytearray(path.read_bytes())
    at = data.index(box) + 4 + offset
    data[at:at + 4] = value.to_bytes(4, "big")
    changed = path.with_name(f"changed_{path.name}")
    changed.write_bytes(bytes(data))
    return changed


def test_tables_that_cannot_be_trusted_are_refused(tmp_path: Path) -> None:
    path = write_test_pattern(tmp_path / "dropped.mp4", *DROPPED, "-c:v", "libx264", "-bf", "2", size="160x120",
                              rate="10", seconds=10.0)
    assert frame_times(path, _declared(path)) is not None
    # stts: version and flags, run count, then the first run's sample count.
    assert frame_times(_with_box_field(path, b"stts", 8, 0x7FFFFFFF), _declared(path)) is None  # billions of frames
    assert frame_times(_with_box_field(path, b"ctts", 8, 0), _declared(path)) is None  # offsets for fewer frames
    assert frame_times(_with_box_field(path, b"stts", 4, 0x7FFFFFFF), _declared(path)) is None  # runs past the box


def _field(path: Path, box: bytes, offset: int) -> int:
    data = path.read_bytes()
    at = data.index(box) + 4 + offset
    return int.from_bytes(data[at:at + 4], "big")


def test_tables_counting_other_samples_than_ffmpeg_decodes_are_refused(tmp_path: Path) -> None:
    """A time for a sample the sizes do not list, or the table of a track other than the one
    decoded (an auxiliary video track first), would number frames that are not there."""
    path = write_test_pattern(tmp_path / "dropped.mp4", *DROPPED, "-c:v", "libx264", "-bf", "2", size="160x120",
                              rate="10", seconds=10.0)
    declared = _declared(path)
    assert frame_times(path, declared) is not None
    assert frame_times(path, declared + 1) is None  # the track FFmpeg decodes has another count
    phantom = _with_box_field(path, b"stts", 8, _field(path, b"stts", 8) + 1)  # one more sample timed
    assert frame_times(phantom, declared) is None and frame_times(phantom, _declared(phantom)) is None


def test_a_table_of_more_runs_than_the_track_has_samples_is_not_read() -> None:
    """Each run counts a sample at least: millions of runs for a thousand frames cost memory only."""
    table = io.BytesIO(bytes(4) + (5).to_bytes(4, "big") + bytes(40))
    with pytest.raises(ValueError, match="5 runs"):
        sample_runs(table, 0, 48, most=4)
    assert sample_runs(table, 0, 48, most=5).shape == (5, 2)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x08moov", b"not an mp4 at all"])
def test_a_file_without_a_table_tells_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.mp4"
    path.write_bytes(content)
    assert frame_times(path, 100) is None
