"""The tests' not-a-video bytes are not a video to OpenCV, whatever the suffix they are stored under."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from fakes.media import garbage_bytes

SIZES_USED = (5_000, 10_000, 20_000, 50_000, 200_000)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
@pytest.mark.parametrize("size", SIZES_USED)
def test_garbage_bytes_never_decode(tmp_path: Path, size: int, suffix: str) -> None:
    for data in (garbage_bytes(size), b"RIFF" + garbage_bytes(size)):
        path = tmp_path / f"garbage{suffix}"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            assert not (capture.isOpened() and capture.read()[0])
        finally:
            capture.release()


def test_garbage_bytes_are_the_same_every_time() -> None:
    assert garbage_bytes(1000) == garbage_bytes(1000) != garbage_bytes(1000, seed=1)
