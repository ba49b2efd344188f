"""Telling a fragmented MP4 from its first boxes: real files of every container the service
meets, and hand-made box layouts for the forms FFmpeg does not write."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from fakes.media import CONTAINER_VARIANTS, write_container_variant
from videodag_service.video.fragmented_mp4 import is_fragmented_mp4


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("containers")
    return {name: write_container_variant(directory, name, seconds=1.0) for name in CONTAINER_VARIANTS}


def _box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _large_box(kind: bytes, payload: bytes = b"") -> bytes:
    """The 64-bit size form: size 1, then the size in the 8 bytes after the type."""
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


FTYP = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso6")
MVHD = _box(b"mvhd", bytes(100))
MVEX = _box(b"mvex", _box(b"trex", bytes(24)))


@pytest.mark.parametrize("name", sorted(CONTAINER_VARIANTS))
def test_only_the_fragmented_file_is_fragmented(containers: dict[str, Path], name: str) -> None:
    with open(containers[name], "rb") as stream:
        assert is_fragmented_mp4(stream) is (name == "fragmented.mp4")
        assert stream.tell() == 0  # left for FFmpeg at its start


def test_the_shared_sample_clips_are_not_fragmented(sample_clip: Path) -> None:
    with open(sample_clip, "rb") as stream:
        assert not is_fragmented_mp4(stream)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (FTYP + _box(b"moov", MVHD + MVEX) + _box(b"moof") + _box(b"mdat"), True),
        (FTYP + _box(b"free", bytes(64)) + _box(b"moov", MVHD + MVEX), True),  # boxes before moov are skipped
        (_large_box(b"ftyp", b"isom") + _large_box(b"moov", MVHD + _large_box(b"mvex")), True),
        (FTYP + _box(b"moov", MVHD + _box(b"trak")), False),  # an index of its own: not fragmented
        (FTYP + _box(b"mdat", bytes(32)) + _box(b"moov", MVHD + MVEX), False),  # media first: index at the end
        (FTYP + _box(b"moof") + _box(b"moov", MVHD + MVEX), False),
        (_box(b"moov", MVHD + MVEX), False),  # no ftyp first: not an ISO file
        (FTYP + struct.pack(">I4s", 0, b"moov") + MVHD + MVEX, False),  # runs to an end not yet known
        (FTYP + struct.pack(">I4s", 4, b"moov") + MVHD + MVEX, False),  # smaller than its own header
        (FTYP + struct.pack(">I4s", 10_000, b"moov") + MVHD, False),  # ends before its mvex would come
        (FTYP + _box(b"moov", MVHD + struct.pack(">I4s", 9_999, b"mvex")), False),  # a child past its parent
        (FTYP[:6], False),
        (b"", False),
        (b"RIFF\x00\x00\x00\x00AVI LIST", False),
        (bytes(range(256)) * 16, False),
    ],
    ids=[
        "moov-with-mvex", "free-box-first", "64-bit-sizes", "moov-without-mvex", "mdat-first", "moof-first",
        "no-ftyp", "size-zero", "size-too-small", "truncated-moov", "child-overruns", "short-header", "empty",
        "avi", "noise",
    ],
)
def test_box_layouts(layout: bytes, expected: bool) -> None:
    stream = io.BytesIO(layout)
    assert is_fragmented_mp4(stream) is expected
    assert stream.tell() == 0


def test_a_file_of_endless_boxes_is_judged_from_a_bounded_number_of_them() -> None:
    """A hostile file of nothing but tiny boxes is given up on, not walked to its end."""
    layout = FTYP + _box(b"free") * 100_000 + _box(b"moov", MVHD + MVEX)
    stream = io.BytesIO(layout)
    reads: list[int] = []
    original_read = stream.read

    def counting_read(size: int = -1, /) -> bytes:
        reads.append(size)
        return original_read(size)

    stream.read = counting_read  # type: ignore[method-assign]
    assert not is_fragmented_mp4(stream)
    assert len(reads) < 100
