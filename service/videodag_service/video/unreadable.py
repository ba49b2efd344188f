"""The VideoUnreadable errors, worded for the caller: what is wrong with the file, not with OpenCV.

Apart from the reader because the decoder, its process and the run all raise them, and
because a file that does not open as a video is named by what its bytes look like
(`content_guess`): an MP3, a PDF or an HTML page under a `.mp4` name is fixed differently
from a damaged MP4, and the caller is told which, with its `detected_type`.
"""

from __future__ import annotations

import os
from pathlib import Path

from videodag_service.errors import ErrorDetails, VideoUnreadable
from videodag_service.video.content_guess import guess_content

# An audio file's cover picture (an MP3's or M4A's artwork) reaches OpenCV as a one-frame
# "video" stream of a still-image codec, timed by the 90 kHz clock: 90,000 frames a second,
# so a 15 s song declares 1,350,000 frames. No real video of those codecs runs that fast.
_COVER_PICTURE_MIN_FPS = 1000.0
_STILL_IMAGE_CODECS = frozenset({"MJPG", "MPNG", "PNG", "BMP", "GIF", "WEBP", "TIFF"})


def unreadable(path: str | os.PathLike[str], reason: str, details: ErrorDetails | None = None,
               logged_reason: str | None = None) -> VideoUnreadable:
    """The error for a file OpenCV cannot use; only the base name is shown (temp paths are private).
    `logged_reason`: the reason as the server's log gives it, when `reason` quotes the upload."""
    opening = f"Unable to read video file {Path(path).name!r}: "
    return VideoUnreadable(opening + reason, details, logged_message=opening + (logged_reason or reason))


def not_openable(path: Path) -> VideoUnreadable:
    """The error for a file OpenCV did not open, saying what its bytes look like where that is known."""
    if not path.exists():  # the service says whose fault that is (`missing_stored_copy_as_error`)
        return unreadable(path, "no such file")
    return _naming_its_content(path, "not a video OpenCV can decode", "not a video OpenCV can decode: {}")


def no_video_stream(path: Path) -> VideoUnreadable:
    """The error for a file FFmpeg opens but finds no picture in, saying what its bytes look like
    where that is known (an animated WebP, say, which this FFmpeg reads as an image it cannot decode)."""
    return _naming_its_content(path, "it has no video stream", "it has no video stream OpenCV can decode: {}")


def is_cover_picture(fps: float, codec: str) -> bool:
    """Whether the only "video" stream FFmpeg found is an audio file's cover picture."""
    return fps >= _COVER_PICTURE_MIN_FPS and codec in _STILL_IMAGE_CODECS


def cover_picture_only(path: Path) -> VideoUnreadable:
    """The error for an audio file whose cover picture FFmpeg took for its video (`is_cover_picture`)."""
    return _naming_its_content(path, "it is audio; its only picture is a cover image, not video",
                               "{}; its only picture is a cover image, not video")


def _naming_its_content(path: Path, unknown: str, known: str) -> VideoUnreadable:
    """`unreadable` for `unknown` reasons where the file's bytes say nothing (`guess_content`);
    otherwise for the reason `known` with the guess's words in its `{}`, and the detected type."""
    guess = guess_content(path)
    if guess is None:
        return unreadable(path, unknown)
    return unreadable(path, known.format(guess.reason), ErrorDetails(metadata={"detected_type": guess.detected_type}),
                      known.format(guess.logged_reason))
