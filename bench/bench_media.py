"""The benchmark's inputs: a 720p H.264 clip made from the sample clip, and synthetic uploads.

The opencv-python-headless wheels ship FFmpeg without an H.264 encoder (asking
`cv2.VideoWriter` for 'avc1' falls back to a hardware encoder that is not there), so the
clip is encoded by an `ffmpeg` executable with libx264: the one bundled by the
`imageio-ffmpeg` package if installed, else one on PATH. Without either it falls back to
OpenCV's MPEG-4 Part 2 ('mp4v') writer and says so, since that codec decodes faster than
H.264 and the figures are then not comparable with H.264 ones.

The frames are the sample clip's pedestrians scaled to 1280x720, played forwards then
backwards, under a slow horizontal pan: real texture and whole-frame motion, so the
encoder cannot make every frame a near copy of the last.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 1280, 720
FPS = 30
# The pan crops a 1280x720 window out of the frame scaled to this size.
_PANNED_WIDTH, _PANNED_HEIGHT = 1440, 810


@dataclass(frozen=True)
class GeneratedClip:
    path: Path
    frame_count: int
    codec: str
    """'H.264 (libx264)' or 'MPEG-4 Part 2 (mp4v)' when no H.264 encoder was found."""


def find_h264_encoder() -> str | None:
    """An ffmpeg executable that can encode H.264, or None."""
    candidates: list[str] = []
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    on_path = shutil.which("ffmpeg")
    if on_path is not None:
        candidates.append(on_path)
    for executable in candidates:
        encoders = subprocess.run([executable, "-hide_banner", "-encoders"], capture_output=True, text=True)
        if encoders.returncode == 0 and " libx264 " in encoders.stdout:
            return executable
    return None


def make_720p_clip(sample_clip: Path, frame_count: int, destination: Path) -> GeneratedClip:
    """Write `frame_count` 1280x720 frames at 30 fps, H.264 with the index at the front (+faststart)."""
    frames = _sample_frames(sample_clip)
    encoder = find_h264_encoder()
    if encoder is None:
        path = destination.with_suffix(".mp4")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
        try:
            for frame_index in range(frame_count):
                writer.write(_panned_frame(frames, frame_index))
        finally:
            writer.release()
        return GeneratedClip(path, frame_count, "MPEG-4 Part 2 (mp4v: no H.264 encoder found)")
    path = destination.with_suffix(".mp4")
    command = [
        encoder, "-y", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(path),
    ]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as process:
        assert process.stdin is not None
        try:
            for frame_index in range(frame_count):
                process.stdin.write(_panned_frame(frames, frame_index).tobytes())
        finally:
            process.stdin.close()
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed with exit code {process.returncode} writing {path}")
    return GeneratedClip(path, frame_count, "H.264 (libx264)")


def remux_fragmented(clip: Path, destination: Path) -> Path | None:
    """The same stream as `clip`, copied into a fragmented MP4 (one fragment per keyframe);
    None without an ffmpeg to do it."""
    executable = find_h264_encoder()
    if executable is None:
        return None
    command = [executable, "-y", "-hide_banner", "-loglevel", "error", "-i", str(clip),
               "-c", "copy", "-movflags", "+frag_keyframe+empty_moov", str(destination)]
    subprocess.run(command, check=True, timeout=300)
    return destination


def _sample_frames(sample_clip: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(sample_clip), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(cv2.resize(image, (_PANNED_WIDTH, _PANNED_HEIGHT), interpolation=cv2.INTER_LINEAR))
    finally:
        capture.release()
    if len(frames) < 2:
        raise RuntimeError(f"could not decode {sample_clip}")
    return frames


def _panned_frame(frames: list[np.ndarray], frame_index: int) -> np.ndarray:
    period = 2 * len(frames) - 2
    position = frame_index % period
    source = frames[position if position < len(frames) else period - position]
    phase = 0.5 - 0.5 * math.cos(2 * math.pi * frame_index / (4 * FPS))
    x = round(phase * (_PANNED_WIDTH - WIDTH))
    y = (_PANNED_HEIGHT - HEIGHT) // 2
    return np.ascontiguousarray(source[y:y + HEIGHT, x:x + WIDTH])


def write_random_file(path: Path, size_bytes: int) -> Path:
    """A file of incompressible bytes (not a video): for the upload throughput measurement."""
    generator = np.random.default_rng(1)
    block = 8 * 1024 * 1024
    with path.open("wb") as file:
        remaining = size_bytes
        while remaining > 0:
            count = min(block, remaining)
            file.write(generator.integers(0, 256, count, dtype=np.uint8).tobytes())
            remaining -= count
    return path


class SyntheticUpload(io.RawIOBase):
    """`size_bytes` of repeated pseudo-random bytes produced on the fly, never held whole.

    Seekable, so the client declares its size; used to upload 1 GB without a 1 GB file.
    """

    def __init__(self, size_bytes: int, name: str = "synthetic.mp4") -> None:
        super().__init__()
        self.name = name
        self._size = size_bytes
        self._position = 0
        self._pattern = np.random.default_rng(2).integers(0, 256, 4 * 1024 * 1024, dtype=np.uint8).tobytes()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, min(self._size, base + offset))
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._size - self._position)
        written = 0
        while written < count:
            start = (self._position + written) % len(self._pattern)
            piece = min(count - written, len(self._pattern) - start)
            view[written:written + piece] = self._pattern[start:start + piece]
            written += piece
        self._position += count
        return count
