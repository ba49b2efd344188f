"""Small generated videos whose frames carry their own index, so tests can check which frame
a decoder really returned instead of trusting the index it reports.

Each frame is a 4 x 3 grid of 16 px blocks; block b is white when bit b of the frame index
is set. The blocks survive MJPG and MPEG-4 compression, so `read_frame_index` recovers the
index exactly for up to 4096 frames.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np

BLOCK = 16
COLUMNS = 4
ROWS = 3
FRAME_SIZE = (COLUMNS * BLOCK, ROWS * BLOCK)  # (width, height) as OpenCV wants it
MAX_FRAMES = 1 << (COLUMNS * ROWS)


def indexed_frame(frame_index: int) -> np.ndarray:
    width, height = FRAME_SIZE
    image = np.zeros((height, width, 3), np.uint8)
    for bit in range(COLUMNS * ROWS):
        if frame_index >> bit & 1:
            row, column = divmod(bit, COLUMNS)
            image[row * BLOCK:(row + 1) * BLOCK, column * BLOCK:(column + 1) * BLOCK] = 255
    return image


def read_frame_index(image: np.ndarray) -> int:
    frame_index = 0
    for bit in range(COLUMNS * ROWS):
        row, column = divmod(bit, COLUMNS)
        if image[row * BLOCK:(row + 1) * BLOCK, column * BLOCK:(column + 1) * BLOCK].mean() > 127:
            frame_index |= 1 << bit
    return frame_index


def write_indexed_video(path: Path, frame_count: int, *, fps: float = 25.0, fourcc: str = "MJPG") -> Path:
    """Write `frame_count` indexed frames; MJPG goes in .avi, mp4v in .mp4."""
    if frame_count > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} frames can carry their index")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    try:
        for frame_index in range(frame_count):
            writer.write(indexed_frame(frame_index))
    finally:
        writer.release()
    return path


def write_avi_with_a_damaged_frame(path: Path, frame_count: int, damaged_index: int) -> Path:
    """Indexed MJPG frames (`write_indexed_video`), the JPEG of one of them zeroed, as a bad sector leaves it."""
    write_indexed_video(path, frame_count)
    data = bytearray(path.read_bytes())
    position = data.index(b"movi")
    for _ in range(damaged_index + 1):
        position = data.index(b"00dc", position + 4)
    size = int.from_bytes(data[position + 4: position + 8], "little")
    data[position + 8: position + 8 + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


# Containers an upload may come in, as FFmpeg writes them: (file name, encoder arguments).
CONTAINER_VARIANTS: dict[str, tuple[str, ...]] = {
    "faststart.mp4": ("-c:v", "libx264", "-movflags", "+faststart"),
    "fragmented.mp4": ("-c:v", "libx264", "-movflags", "+frag_keyframe+empty_moov"),
    "index_at_end.mp4": ("-c:v", "libx264"),
    "matroska.mkv": ("-c:v", "libx264"),
    "mpegts.ts": ("-c:v", "libx264"),
    "mpeg4.avi": ("-c:v", "mpeg4", "-q:v", "4"),
}


def ffmpeg_executable() -> str:
    """The FFmpeg binary bundled with imageio-ffmpeg (a test dependency)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def write_container_variant(directory: Path, name: str, *, seconds: float = 6.0) -> Path:
    """A 640x360, 25 fps test-pattern video in the container `name` names (see CONTAINER_VARIANTS),
    large enough (about 1 MB) that FFmpeg opens it long before its end when it can."""
    return write_test_pattern(directory / name, "-g", "25", "-pix_fmt", "yuv420p", *CONTAINER_VARIANTS[name],
                              seconds=seconds)


def write_cut_copy(source: Path, path: Path, keep_bytes: int) -> Path:
    """`source` remuxed (stream copy) into the container `path`'s extension names, then cut
    after its first `keep_bytes` bytes, as a broken copy or download would be."""
    whole = path.with_name(f"whole_{path.name}")
    command = [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy",
               str(whole)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    path.write_bytes(whole.read_bytes()[:keep_bytes])
    return path


def write_trimmed_copy(source: Path, path: Path, *output_options: str, start_seconds: float, seconds: float) -> Path:
    """A part of `source` cut out without re-encoding (`ffmpeg -ss -t -c copy`), as people trim
    videos: an MP4 keeps the frames from the key frame before the cut and hides those before
    it with an edit list, so its index lists more frames than a decoder shows."""
    command = [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", "-ss", str(start_seconds),
               "-i", str(source), "-t", str(seconds), "-c", "copy", *output_options, str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return path


def write_test_pattern(path: Path, *output_options: str, size: str = "640x360", seconds: float = 6.0,
                       rate: str = "25") -> Path:
    """FFmpeg's moving test pattern at `rate` frames a second (25 unless told), encoded as `output_options` say."""
    command = [
        ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
        *output_options, str(path),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return path


def write_tone(path: Path, *output_options: str, seconds: float = 1.0) -> Path:
    """A real sound and no picture: FFmpeg's sine tone, encoded as the name (or `output_options`) says."""
    command = [
        ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"sine=duration={seconds}", *output_options, str(path),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return path


def write_variable_rate_video(path: Path, frame_count: int) -> Path:
    """Indexed frames (H.264 in MP4) at a variable frame rate, as phones and screen recorders
    write them: 25 fps for the first 30 frames, then about 5 fps (the times are those
    `presentation_times` reads back); the container declares the average rate."""
    width, height = FRAME_SIZE
    command = [
        ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", "25", "-i", "-",
        "-vf", "setpts='if(lt(N,30),N/25,N/5)/TB'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(path),
    ]
    frames = b"".join(indexed_frame(index).tobytes() for index in range(frame_count))
    subprocess.run(command, input=frames, check=True, capture_output=True, timeout=120)
    return path


def presentation_times(path: Path) -> list[float]:
    """When each frame of `path` is presented, in seconds, as FFmpeg itself reports it."""
    command = [ffmpeg_executable(), "-hide_banner", "-i", str(path), "-vf", "showinfo", "-f", "null", "-"]
    log = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stderr
    return [float(time) for time in re.findall(r" pts_time:(\S+)", log)]


def garbage_bytes(size: int, seed: int = 0) -> bytes:
    """Bytes no decoder makes a video of, the same every run.

    Fresh random bytes are not safe: FFmpeg probes content, and about one 50 KB draw in 300
    passes for a raw H.263 stream and decodes into frames. These are drawn from a fixed seed,
    and tests/unit/video/test_video_garbage.py checks that OpenCV opens none of the sizes used.
    """
    return random.Random(seed).randbytes(size)

