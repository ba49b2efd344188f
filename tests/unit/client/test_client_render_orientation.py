"""`videodag render` orients a video's frames as the service did when it found the boxes.

The files are made by FFmpeg's own muxer with display matrices (`-display_hflip`,
`-display_vflip`, `-display_rotation`), as a phone or an editor writes them. Plain OpenCV
shows one flipped left to right upside down and one flipped top to bottom as stored, so the
service's boxes, drawn on those, landed off their objects.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes.media import ffmpeg_executable, write_test_pattern
from videodag_client._render import render_video
from videodag_service.video import open_video
from videodag_service.video.sampling import FrameWindow

WIDTH, HEIGHT = 160, 120
DISPLAY_OPTIONS = {
    "stored": (),
    "flipped left to right": ("-display_hflip",),
    "flipped top to bottom": ("-display_vflip",),
    "turned": ("-display_rotation", "90"),
    "turned and flipped left to right": ("-display_rotation", "90", "-display_hflip"),
    "turned the other way and flipped top to bottom": ("-display_rotation", "270", "-display_vflip"),
    "turned over and flipped left to right": ("-display_rotation", "180", "-display_hflip"),
}
# MJPEG's loss on the test pattern: a mean difference of about 3 levels; a mirrored frame differs by 60.
LARGEST_CODEC_DIFFERENCE = 8.0


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pattern(tmp_path_factory.mktemp("orientation") / "pattern.mp4", "-c:v", "libx264", "-qp", "0",
                              size=f"{WIDTH}x{HEIGHT}", seconds=0.4)


def with_display_options(source: Path, path: Path, options: tuple[str, ...]) -> Path:
    """`source` remuxed by FFmpeg (no re-encoding) with the display matrix `options` ask for."""
    command = [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", *options, "-i", str(source),
               "-c", "copy", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return path


def service_frames(path: Path) -> list[np.ndarray]:
    with open_video(path) as video:
        return [frame.image.copy() for frame in video.frames(FrameWindow())]


def decoded(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return frames


def mean_difference(image: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(image.astype(np.int16) - other.astype(np.int16)).mean())


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
@pytest.mark.parametrize("name", list(DISPLAY_OPTIONS))
def test_rendered_frames_are_the_frames_the_service_analysed(
    pattern: Path, tmp_path: Path, name: str, suffix: str
) -> None:
    """The same pictures, so a box the service found is drawn on its object."""
    video = with_display_options(pattern, tmp_path / f"shown{suffix}", DISPLAY_OPTIONS[name])
    analysed = service_frames(video)

    render_video(video, {}, tmp_path / "rendered.avi")
    rendered = decoded(tmp_path / "rendered.avi")

    assert len(rendered) == len(analysed) == 10
    for got, wanted in zip(rendered, analysed, strict=True):
        assert got.shape == wanted.shape, name
        assert mean_difference(got, wanted) < LARGEST_CODEC_DIFFERENCE, name



def test_a_video_read_from_a_fifo_is_rendered_whole(sample_clip: Path, tmp_path: Path) -> None:
    """Looking for a display matrix read the first bytes of the pipe OpenCV was decoding (piped
    in, `videodag render /dev/stdin`): one frame of the MP4 was rendered, or the render waited
    for good on a FIFO whose writer had gone."""
    fifo = tmp_path / "video.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{sample_clip}' > '{fifo}'"])
    try:
        summary = render_video(fifo, {}, tmp_path / "rendered.avi")
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert summary.frames_written == 120
