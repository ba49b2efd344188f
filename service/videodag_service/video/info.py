"""The facts of a video file, read once when it is opened and before any frame is decoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about a video, plus the file's size.

    fps: frames per second as declared; 0.0 when unknown.
    frame_count: frames as declared (an estimate for some formats); 0 when unknown.
    width, height: frame size in pixels.
    duration_seconds: frame_count / fps; 0.0 when either is unknown.
    codec: the four-character code OpenCV reports ("h264", "FMP4", "MJPG"); "" if unknown.
    size_bytes: size of the file on disk.
    frame_count_is_estimate: whether frame_count is FFmpeg's estimate from the duration
        (Matroska, WebM, MPEG streams), not a count the container stores (MP4, QuickTime,
        AVI); a long gap between frames, or sound outlasting the picture, stretches it.
    """

    fps: float
    frame_count: int
    width: int
    height: int
    duration_seconds: float
    codec: str
    size_bytes: int
    frame_count_is_estimate: bool = False
