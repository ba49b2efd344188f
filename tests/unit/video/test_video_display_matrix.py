"""Mirroring display matrices (QuickTime's Flip Horizontal and Flip Vertical): frames come out
as a player shows them, as rotations already did."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fakes.fake_dag import DEFAULT_PIPELINE
from fakes.media import write_test_pattern
from videodag_service.media.display_matrix import mirrors
from videodag_service.video import FrameProcessed, VideoFilePipelineService, open_video
from videodag_service.video.sampling import FrameWindow

WIDTH, HEIGHT = 160, 120
SHOWN: dict[str, tuple[tuple[int, int, int, int, int, int], Callable[[np.ndarray], np.ndarray]]] = {
    # name: ((a, b, c, d, tx, ty) of the matrix, in units and pixels), what a player shows of the stored picture
    "stored": ((1, 0, 0, 1, 0, 0), lambda image: image),
    "flipped left to right": ((-1, 0, 0, 1, WIDTH, 0), lambda image: image[:, ::-1]),
    "flipped top to bottom": ((1, 0, 0, -1, 0, HEIGHT), lambda image: image[::-1]),
    "transposed": ((0, 1, 1, 0, 0, 0), lambda image: image.transpose(1, 0, 2)),
    "transposed the other way": ((0, -1, -1, 0, HEIGHT, WIDTH), lambda image: image[::-1, ::-1].transpose(1, 0, 2)),
    "turned clockwise": ((0, 1, -1, 0, HEIGHT, 0), lambda image: np.rot90(image, -1)),
}


def with_matrix(source: Path, path: Path, matrix: tuple[int, int, int, int, int, int]) -> Path:
    """`source` with its video track header's display matrix replaced (one track, version 0)."""
    data = bytearray(source.read_bytes())
    header = data.index(b"tkhd") + 4
    assert data[header] == 0
    a, b, c, d, tx, ty = (value * 0x10000 for value in matrix)
    data[header + 40:header + 76] = struct.pack(">iiIiiIiiI", a, b, 0, c, d, 0, tx, ty, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def stored_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return frames


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pattern(tmp_path_factory.mktemp("matrix") / "pattern.mp4", "-c:v", "libx264", "-qp", "0",
                              size=f"{WIDTH}x{HEIGHT}", seconds=0.4)


@pytest.mark.parametrize("name", list(SHOWN))
def test_frames_come_out_as_a_player_shows_them(pattern: Path, tmp_path: Path, name: str) -> None:
    matrix, shown = SHOWN[name]
    path = with_matrix(pattern, tmp_path / "shown.mp4", matrix)
    assert mirrors(path) is (matrix[0] * matrix[3] - matrix[1] * matrix[2] < 0)
    expected = [shown(image) for image in stored_frames(path)]
    with open_video(path) as video:
        frames = [frame.image.copy() for frame in video.frames(FrameWindow())]
        assert (video.info.height, video.info.width) == expected[0].shape[:2]
    assert len(frames) == len(expected) == 10
    for got, wanted in zip(frames, expected, strict=True):
        assert np.array_equal(got, wanted), name


@pytest.mark.parametrize("content", [b"", b"not an mp4", b"\x00\x00\x00\x10moov\x00\x00\x00\x08tkhd"])
def test_a_file_without_a_readable_matrix_does_not_mirror(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.mp4"
    path.write_bytes(content)
    assert mirrors(path) is False


class _HashingDag:
    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"sha1": hashlib.sha1(payload["image"].tobytes()).hexdigest()}


def test_the_decoder_process_flips_the_frames_it_lends_too(pattern: Path, tmp_path: Path) -> None:
    """There frames are converted into shared memory, and flipped there."""
    matrix, shown = SHOWN["flipped left to right"]
    path = with_matrix(pattern, tmp_path / "shown.mp4", matrix)
    expected = [hashlib.sha1(np.ascontiguousarray(shown(image)).tobytes()).hexdigest() for image in stored_frames(path)]
    service = VideoFilePipelineService(_HashingDag(), isolation="process")  # type: ignore[arg-type]
    events = list(service.stream_run(DEFAULT_PIPELINE, path, None))
    assert [event.result["sha1"] for event in events if isinstance(event, FrameProcessed)] == expected
