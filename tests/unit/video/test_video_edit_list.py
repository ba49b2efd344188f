"""How long an MP4's video track is shown, read from its edit list."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fakes.media import write_container_variant, write_test_pattern, write_trimmed_copy
from videodag_service.video.edit_list import shown_seconds


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of H.264 with B-frames: FFmpeg writes an edit list that hides their delay, not frames."""
    folder = tmp_path_factory.mktemp("edit_list")
    return write_test_pattern(folder / "source.mp4", "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p",
                              seconds=6.0)


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_a_trimmed_copy_shows_what_was_cut_out_not_what_it_holds(source: Path, tmp_path: Path, suffix: str) -> None:
    trimmed = write_trimmed_copy(source, tmp_path / f"trimmed{suffix}", start_seconds=1.4, seconds=3.0)
    assert shown_seconds(trimmed) == pytest.approx(3.0, abs=0.2)  # stream copy ends on a whole packet


def test_an_edit_list_that_only_hides_the_b_frame_delay_shows_the_whole_video(source: Path) -> None:
    assert shown_seconds(source) == pytest.approx(6.0, abs=0.05)


def test_no_edit_list_or_not_an_mp4_gives_none(tmp_path: Path, make_video) -> None:
    fragmented = write_container_variant(tmp_path, "fragmented.mp4", seconds=2.0)
    assert shown_seconds(fragmented) is None  # its length is in fragments the edit list does not know
    assert shown_seconds(make_video(5)) is None  # an AVI
    assert shown_seconds(tmp_path / "missing.mp4") is None


def test_a_cut_or_garbled_movie_box_gives_none(source: Path, tmp_path: Path) -> None:
    data = source.read_bytes()
    moov = data.index(b"moov") - 4
    cut = tmp_path / "cut_in_moov.mp4"
    cut.write_bytes(data[: moov + 200])
    assert shown_seconds(cut) is None
    garbled = tmp_path / "garbled_elst.mp4"
    elst = data.index(b"elst")
    # An edit count far beyond the box: reading the entries runs out of bytes.
    garbled.write_bytes(data[: elst + 8] + struct.pack(">I", 2**31) + data[elst + 12:])
    assert shown_seconds(garbled) is None
