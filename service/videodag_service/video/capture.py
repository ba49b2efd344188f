"""Open a video as an OpenCV capture (FFmpeg backend) and probe what it declares.

Apart from the reader (`reader`), which decodes and samples frames from an opened capture:
opening is where the FFmpeg options, the thread count and an upload still arriving are
dealt with, and probing is where a file OpenCV opens but cannot use is refused.

An upload still arriving (`GrowingUpload`) is read through a stream that waits for its bytes
(`growing_upload`); FFmpeg decodes it exactly as it would the stored file. In a process that
opens one capture at a time (`open_fragments_as_they_arrive`), a fragmented MP4 still arriving
is opened from its first fragment. The decoder runs `decoder_thread_count()` threads, two
more than the cores the process may use (OpenCV's default is one per core).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2

from videodag_service.cores import usable_cores
from videodag_service.media.container import stores_frame_count
from videodag_service.media.display_matrix import mirror_flip
from videodag_service.video.elementary_stream import declared_frame_rate
from videodag_service.video.fragmented_mp4 import is_fragmented_mp4
from videodag_service.video.growing_upload import GrowingFileReader, GrowingUpload
from videodag_service.video.info import VideoInfo
from videodag_service.video.unreadable import (
    cover_picture_only,
    is_cover_picture,
    no_video_stream,
    not_openable,
    unreadable,
)

MAX_DECODER_THREADS = 16
# FFmpeg options OpenCV passes to every capture it opens, as "key;value|key;value".
_FFMPEG_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# Index nothing at open: FFmpeg reads a fragmented MP4's first fragment, not all of their headers.
_IGNORE_INDEX = "fflags;ignidx"
_fragments_as_they_arrive = False


def decoder_thread_count() -> int:
    """Threads FFmpeg decodes one video with: the usable cores plus two, at most 16.

    With one thread per core, frame-threaded H.264 leaves cores idle while the conversion
    to BGR runs in the caller's thread. Measured on 2 cores (OpenCV 4.14, 720p H.264):
    2 threads decode 650-680 fps alone, 3 and 4 threads 750-780, more no faster; end to
    end (decoder process, `frame_stats_v1`, gRPC client on the same machine) 4 threads
    give 4-6% more frames per second than 2, and a detector pipeline is no slower.
    """
    return min(MAX_DECODER_THREADS, usable_cores() + 2)


def open_fragments_as_they_arrive() -> None:
    """From now on, open a fragmented MP4 still arriving as soon as its first fragment is in.

    FFmpeg opening a fragmented MP4 from a seekable source reads every fragment's header
    first, so the upload would open only once complete. Told to index nothing at open
    (`fflags=ignidx`) it reads the first fragment only and the others as it decodes: the
    same frames, times and pixels (measured), but the frame count it declares is that of
    the fragments read so far, so the video's count and duration are reported unknown (0).
    OpenCV takes FFmpeg options from the environment only, so this is for a process that
    opens one capture at a time (a decoder process): the variable is set around the open,
    and a capture opening meanwhile in another thread would get the option too.
    """
    global _fragments_as_they_arrive
    _fragments_as_they_arrive = True


class Capture:
    """An OpenCV capture of `path`, or of `growing` as its bytes arrive; `release()` frees it.

    `opencv` is the capture itself; raises VideoUnreadable when OpenCV cannot open it.
    """

    def __init__(self, path: Path, growing: GrowingUpload | None) -> None:
        self.path = path
        self._growing = growing
        self._stream: GrowingFileReader | None = None
        self._count_unknown = False
        """Set when FFmpeg was told to leave a fragmented MP4's later fragments for later."""
        self.opencv = self._open()

    def reopen(self) -> None:
        """Release the capture and open it again, at the start of the video."""
        self.release()
        self.opencv = self._open()

    def release(self) -> None:
        self.opencv.release()
        self._close_stream()

    def probe(self) -> VideoInfo:
        """What the video declares; raises VideoUnreadable for one with no picture to decode."""
        try:
            fps = _finite_or_zero(self.opencv.get(cv2.CAP_PROP_FPS))
            declared_count = int(_finite_or_zero(self.opencv.get(cv2.CAP_PROP_FRAME_COUNT)))
            width = int(_finite_or_zero(self.opencv.get(cv2.CAP_PROP_FRAME_WIDTH)))
            height = int(_finite_or_zero(self.opencv.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            fourcc = self.opencv.get(cv2.CAP_PROP_FOURCC)
        except cv2.error as error:
            raise unreadable(self.path, f"probing failed: {error}") from error
        if width <= 0 or height <= 0:
            raise no_video_stream(self.path)
        codec = _fourcc_text(fourcc)
        if is_cover_picture(fps, codec):
            raise cover_picture_only(self.path)
        # A raw H.264/HEVC stream: FFmpeg reports 25 fps whatever the stream declares.
        fps = declared_frame_rate(self.path, codec) or fps
        frame_count = 0 if self._count_unknown else declared_count
        return VideoInfo(
            fps=fps,
            frame_count=frame_count,
            width=width,
            height=height,
            duration_seconds=frame_count / fps if fps > 0 and frame_count > 0 else 0.0,
            codec=codec,
            size_bytes=self.path.stat().st_size if self._growing is None else self._growing.size_bytes,
            frame_count_is_estimate=frame_count > 0 and not stores_frame_count(self.path),
        )

    def mirror_correction(self) -> int | None:
        """The flip that shows a mirrored MP4 as it is shown (`display_matrix`); None for others."""
        try:
            return mirror_flip(self.path, self.opencv)
        except cv2.error as error:
            raise unreadable(self.path, f"probing failed: {error}") from error

    def _open(self) -> cv2.VideoCapture:
        try:
            capture = (
                cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, _capture_parameters())
                if self._growing is None
                else self._open_growing(self._growing)
            )
        except FileNotFoundError as error:  # an upload still arriving, gone: its error names the whole path
            self._close_stream()
            raise not_openable(self.path) from error
        except cv2.error as error:
            self._close_stream()
            raise unreadable(self.path, f"OpenCV refused it: {error}") from error
        if not capture.isOpened():
            capture.release()
            self._close_stream()
            raise not_openable(self.path)
        return capture

    def _open_growing(self, upload: GrowingUpload) -> cv2.VideoCapture:
        self._stream = GrowingFileReader(upload)
        if not (_fragments_as_they_arrive and is_fragmented_mp4(self._stream)):
            return _open_stream(self._stream)
        self._count_unknown = True
        before = os.environ.get(_FFMPEG_OPTIONS_VARIABLE)
        os.environ[_FFMPEG_OPTIONS_VARIABLE] = f"{before}|{_IGNORE_INDEX}" if before else _IGNORE_INDEX
        try:
            return _open_stream(self._stream)
        finally:
            if before is None:
                del os.environ[_FFMPEG_OPTIONS_VARIABLE]
            else:
                os.environ[_FFMPEG_OPTIONS_VARIABLE] = before

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _open_stream(stream: GrowingFileReader) -> cv2.VideoCapture:
    # The stubs know only cv2.IStreamReader; the binding takes any io.BufferedIOBase.
    return cv2.VideoCapture(stream, cv2.CAP_FFMPEG, _capture_parameters())  # type: ignore[call-overload,no-any-return]


def _capture_parameters() -> list[int]:
    return [cv2.CAP_PROP_N_THREADS, decoder_thread_count()]


def _finite_or_zero(value: float) -> float:
    """OpenCV reports unknown properties as 0, -1 or NaN depending on the container."""
    return value if math.isfinite(value) and value > 0 else 0.0


def _fourcc_text(value: float) -> str:
    if not math.isfinite(value) or value <= 0:
        return ""
    raw = (int(value) & 0xFFFFFFFF).to_bytes(4, "little")
    text = raw.rstrip(b"\x00 ").decode("ascii", errors="replace")
    return text if text.isprintable() and "\ufffd" not in text else ""
