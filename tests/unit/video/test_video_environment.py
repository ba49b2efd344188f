"""The OpenCV build the video layer relies on: headless 4.x, never the GUI wheel, never 5.x."""

from __future__ import annotations

import importlib.metadata

import cv2
import pytest


def test_opencv_is_version_4() -> None:
    # 5.0 dropped the HOG people detector and the Haar cascades the plugins use.
    assert cv2.__version__.startswith("4."), cv2.__version__


def test_the_headless_build_is_installed() -> None:
    assert importlib.metadata.version("opencv-python-headless").startswith("4.")


def test_the_gui_build_is_not_installed() -> None:
    # Both wheels ship a `cv2` package; the GUI one would silently replace the headless one.
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("opencv-python")


def test_opencv_reads_video_through_ffmpeg() -> None:
    build = cv2.getBuildInformation()
    ffmpeg_lines = [line for line in build.splitlines() if line.strip().startswith("FFMPEG:")]
    assert ffmpeg_lines and "YES" in ffmpeg_lines[0]
