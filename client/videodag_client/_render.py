"""Draw per-frame results onto the video they came from, and a contact sheet of sampled frames.

The results are read by `_results_file`, drawn by `_drawing`, sampled and tiled by
`_contact_sheet`, and written through `_opencv_files`; this module decodes the video, its
frames oriented by the service's own code (`videodag_service.media`) so that boxes land where
they were found, and writes it again, frame by frame. Frames without a result are copied
unchanged, so the output has every input frame.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videodag_client._contact_sheet import FrameSampler, contact_sheet, sample_video
from videodag_client._drawing import draw_result
from videodag_client._opencv_files import OpenCvNames, partial_name, plain_name, write_image, written_video_problem
from videodag_client._render_error import RenderError
from videodag_service.media.display_matrix import mirror_flip

# Writers by output suffix. The headless wheel's FFmpeg has no H.264 encoder, so MP4 gets MPEG-4 Part 2.
_FOURCC_BY_SUFFIX = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}
_FALLBACK_FPS = 25.0
# FFmpeg's AV_LOG_QUIET, for OpenCV's OPENCV_FFMPEG_LOGLEVEL.
_FFMPEG_QUIET = "-8"


@dataclass(frozen=True)
class RenderSummary:
    """What `render_video` wrote."""

    frames_written: int
    frames_annotated: int
    boxes_drawn: int
    snapshot_frames: int
    results_beyond_video: int = 0
    """Results for frames past the video's last: results of another (longer) video?"""


def render_video(
    video: str | os.PathLike[str],
    results: Mapping[int, Mapping[str, Any]],
    output: str | os.PathLike[str],
    *,
    snapshot: str | os.PathLike[str] | None = None,
    snapshot_frames: int = 12,
    thumbnail_width: int = 320,
) -> RenderSummary:
    """Write `output`: every frame of `video`, with the boxes of `results` drawn on theirs.

    The video is written under a temporary name with the same suffix and renamed at the end,
    so `output` is never a half-written file. With `snapshot`, a PNG contact sheet is written
    too: `snapshot_frames` of the frames that have a result, drawn as in `output`, spread
    evenly over them in frame order with the first and the last included (all of them when
    there are fewer). Frames without a result are left out so that no tile is a bare frame
    when a run skipped frames (`--stride`) or covered part of the video (a time window,
    `max_frames`). With no results at all, the frames are spread over the whole video.
    Names that are not UTF-8 are given to OpenCV as `OpenCvNames` says.
    """
    with OpenCvNames() as names:
        return _render_video(names, video, results, output, snapshot, snapshot_frames, thumbnail_width)


def _render_video(
    names: OpenCvNames,
    video: str | os.PathLike[str],
    results: Mapping[int, Mapping[str, Any]],
    output: str | os.PathLike[str],
    snapshot: str | os.PathLike[str] | None,
    snapshot_frames: int,
    thumbnail_width: int,
) -> RenderSummary:
    output_path = Path(output)
    fourcc = _FOURCC_BY_SUFFIX.get(output_path.suffix.lower())
    if fourcc is None:
        raise RenderError(f"cannot write {output_path.suffix or 'files without a suffix'}; "
                          f"use one of {', '.join(sorted(_FOURCC_BY_SUFFIX))}")
    _check_output(output_path, Path(video))
    # Through a symbolic link, as `run -o` writes: the file it points to is replaced, the link stays.
    written = Path(os.path.realpath(output_path))
    if snapshot is not None and not cv2.haveImageWriter(plain_name(os.fspath(snapshot))):
        raise RenderError(f"cannot write a contact sheet to {str(snapshot)!r}: name a .png or .jpg file")
    with _opened_video(names, Path(video)) as capture, _PartialFile(written) as partial:
        declared_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        sampler = FrameSampler(
            snapshot_frames if snapshot is not None else 0,
            thumbnail_width,
            candidates=results.keys() if results else None,
            last=declared_frames - 1 if declared_frames > 0 else None,
        )

        def open_writer(fps: float, first_frame: np.ndarray) -> cv2.VideoWriter:
            return _open_writer(names.of_new(partial.path), output_path, fourcc, fps, first_frame)

        drawn = _draw_frames(capture, Path(video), results, sampler, open_writer)
        if drawn.frames_written == 0:
            raise RenderError(f"no frame could be decoded from {str(video)!r}")
        if (problem := written_video_problem(names.of_new(partial.path), drawn.frames_written)) is not None:
            raise RenderError(f"writing {str(output_path)!r} failed ({problem}); is the disk full?")
        partial.commit()
    sampled = sampler.sample()
    if snapshot is not None and not sampled:
        # Every result is past the video's end (results of another video): show the video itself.
        sampled = sample_video(names.of(written), snapshot_frames, thumbnail_width, drawn.frames_written)
    if snapshot is not None and not write_image(Path(snapshot), contact_sheet(sampled), names):
        raise RenderError(f"cannot write the contact sheet {str(snapshot)!r}")
    beyond = sum(1 for index in results if index >= drawn.frames_written)
    return RenderSummary(drawn.frames_written, drawn.frames_annotated, drawn.boxes_drawn, len(sampled), beyond)


@dataclass
class _Drawn:
    """What `_draw_frames` wrote, so far."""

    frames_written: int = 0
    frames_annotated: int = 0
    boxes_drawn: int = 0


def _draw_frames(
    capture: cv2.VideoCapture,
    video: Path,
    results: Mapping[int, Mapping[str, Any]],
    sampler: FrameSampler,
    open_writer: Callable[[float, np.ndarray], cv2.VideoWriter],
) -> _Drawn:
    """Every frame `capture` decodes, oriented as the service saw it, with its result drawn, to the writer
    `open_writer(fps, first_frame)` opens at the first frame (none for a video without one), and offered
    to `sampler`."""
    # The results' boxes are in the frames the service analysed, which it flips as a player
    # shows a mirrored MP4; OpenCV alone shows one flipped left to right upside down.
    flip = mirror_flip(video, capture)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 and math.isfinite(fps) else _FALLBACK_FPS
    drawn = _Drawn()
    writer: cv2.VideoWriter | None = None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return drawn
            if flip is not None:
                cv2.flip(frame, flip, dst=frame)
            if writer is None:
                writer = open_writer(fps, frame)
            result = results.get(drawn.frames_written)
            if result is not None:
                drawn.boxes_drawn += draw_result(frame, result)
                drawn.frames_annotated += 1
            writer.write(frame)
            sampler.offer(drawn.frames_written, frame)
            drawn.frames_written += 1
    finally:
        if writer is not None:
            writer.release()


@contextmanager
def _opened_video(names: OpenCvNames, video: Path) -> Iterator[cv2.VideoCapture]:
    """`video` opened for reading, released on leaving the block."""
    capture = cv2.VideoCapture(names.of(video))
    try:
        if not capture.isOpened():
            raise RenderError(f"cannot open video {str(video)!r}")
        yield capture
    finally:
        capture.release()


class _PartialFile:
    """`final`'s partial name (`partial_name`), where it is written first: removed on leaving the block
    unless `commit()` has renamed it over `final`, so that an error or an interruption leaves no
    half-written file and the earlier `final`, if any, in place."""

    def __init__(self, final: Path) -> None:
        self.path = partial_name(final)
        self._final = final
        self._committed = False

    def __enter__(self) -> _PartialFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.path.unlink(missing_ok=True)

    def commit(self) -> None:
        """Rename the written file over the final one."""
        self.path.replace(self._final)
        self._committed = True


def quiet_opencv_logs() -> None:
    """Keeps OpenCV's and FFmpeg's log lines (`[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not
    found`, `[ WARN:0@0.02] global loadsave.cpp ...`) off stderr: `render_video` reports what
    fails itself. OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, as it opens its first video, so this
    must come before; a level the user set (OPENCV_FFMPEG_LOGLEVEL, OPENCV_LOG_LEVEL) is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", _FFMPEG_QUIET)
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _check_output(output: Path, video: Path) -> None:
    """Refuses at the start what the final rename would fail on, or do harm with, after the whole video."""
    if output.is_dir():
        raise RenderError(f"cannot write the video to {str(output)!r}: it is a directory")
    if output.exists() and video.exists() and output.samefile(video):
        raise RenderError(f"cannot write the video to {str(output)!r}: it is the input video")


def _open_writer(path: str, output: Path, fourcc: str, fps: float, first_frame: np.ndarray) -> cv2.VideoWriter:
    """A writer of `path`, the temporary name of `output`, which is the file an error names."""
    height, width = first_frame.shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        where = "" if output.parent.is_dir() else f": the directory {str(output.parent)!r} does not exist"
        raise RenderError(f"cannot write {fourcc} video to {str(output)!r}{where}")
    return writer
