"""Whether an MP4 or QuickTime file was cut short, told from its top-level box sizes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fakes.media import CONTAINER_VARIANTS, write_container_variant
from videodag_service.video.cut_short import iso_file_cut_short

ISO_VARIANTS = [name for name in CONTAINER_VARIANTS if name.endswith(".mp4")]


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


@pytest.mark.parametrize("name", ISO_VARIANTS)
def test_a_whole_file_is_not_cut_and_any_cut_of_it_is(tmp_path: Path, name: str) -> None:
    whole = write_container_variant(tmp_path, name, seconds=2.0)
    assert not iso_file_cut_short(whole)
    data = whole.read_bytes()
    for keep in (len(data) - 1, len(data) // 2, 20):
        cut = tmp_path / f"cut_{keep}_{name}"
        cut.write_bytes(data[:keep])
        assert iso_file_cut_short(cut), keep


def test_the_sample_clips_are_whole(sample_clip: Path) -> None:
    assert not iso_file_cut_short(sample_clip)


def test_a_last_box_of_size_zero_runs_to_the_end_and_large_sizes_are_read(tmp_path: Path) -> None:
    ftyp = _box(b"ftyp", b"isom" + bytes(4))
    to_the_end = tmp_path / "size_zero.mp4"
    to_the_end.write_bytes(ftyp + struct.pack(">I4s", 0, b"mdat") + bytes(1000))
    assert not iso_file_cut_short(to_the_end)

    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 1000)
    whole = tmp_path / "large_size.mp4"
    whole.write_bytes(ftyp + large + bytes(1000))
    assert not iso_file_cut_short(whole)
    cut = tmp_path / "large_size_cut.mp4"
    cut.write_bytes(ftyp + large + bytes(999))
    assert iso_file_cut_short(cut)


def test_malformed_sizes_and_missing_files_give_no_verdict(tmp_path: Path) -> None:
    malformed = tmp_path / "malformed.mp4"
    malformed.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + struct.pack(">I4s", 3, b"mdat") + bytes(100))
    assert not iso_file_cut_short(malformed)
    assert not iso_file_cut_short(tmp_path / "missing.mp4")
