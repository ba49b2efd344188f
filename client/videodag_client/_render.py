"""Draw per-frame results onto the video they came from, and a contact sheet of sampled frames.

Results are the JSON Lines `videodag run -o` writes (one `{"frame_index", "result", ...}` per
line; event-wrapped `{"frame": {...}}` lines as the Node example prints are read too). Any
object with a `"box": [x1, y1, x2, y2]` anywhere in a frame's result is drawn, labelled with
its `label`, `track_id`, `score` and `text` when present: the renderer knows no pipeline.
Frames without a result line are copied unchanged, so the output has every input frame.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videodag_client._file_names import beside, is_utf8

BoxColour = tuple[int, int, int]  # OpenCV's BGR order

# Distinct, saturated colours that stay readable on street footage (BGR).
PALETTE: tuple[BoxColour, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# OpenCV's Hershey fonts have ASCII glyphs only; other characters are drawn as "?".
_DRAWABLE = {chr(code) for code in range(32, 127)}
# Writers by output suffix. The headless wheel's FFmpeg has no H.264 encoder, so MP4 gets MPEG-4 Part 2.
_FOURCC_BY_SUFFIX = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}
_FALLBACK_FPS = 25.0
# FFmpeg's AV_LOG_QUIET, for OpenCV's OPENCV_FFMPEG_LOGLEVEL.
_FFMPEG_QUIET = "-8"


class RenderError(ValueError):
    """The video cannot be read or written, or a results line is not a frame result."""


@dataclass(frozen=True)
class RenderSummary:
    """What `render_video` wrote."""

    frames_written: int
    frames_annotated: int
    boxes_drawn: int
    snapshot_frames: int
    results_beyond_video: int = 0
    """Results for frames past the video's last: results of another (longer) video?"""


def load_results(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Frame index -> result, from a JSON Lines file; blank lines and non-frame events are skipped."""
    results: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(_lines_of_text(lines, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RenderError(f"{path}:{number}: not JSON: {error.msg}") from None
            if isinstance(record, dict) and isinstance(record.get("frame"), dict):
                record = record["frame"]
            elif isinstance(record, dict) and "event" in record:
                continue  # upload_received, video_info, summary
            index = record.get("frame_index") if isinstance(record, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                raise RenderError(f"{path}:{number}: expected an object with an integer frame_index")
            result = record.get("result", {})
            if not isinstance(result, dict):
                raise RenderError(f"{path}:{number}: result must be an object")
            results[record["frame_index"]] = result
    return results


def _lines_of_text(lines: Iterable[str], path: str | os.PathLike[str]) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError:
        raise RenderError(f"{path}: not UTF-8 text, as JSON Lines are (if it is the video: the video comes first, "
                          "then the results)") from None


@dataclass(frozen=True)
class Annotation:
    """One object with a box found in a result."""

    output: str
    box: tuple[float, float, float, float]
    caption: str
    colour: BoxColour


def find_annotations(result: Mapping[str, Any]) -> list[Annotation]:
    """Every object with a valid box in a frame's result, wherever it is nested."""
    found: list[Annotation] = []
    for output, value in result.items():
        for item in _objects_with_box(value):
            box = _box(item["box"])
            if box is not None:
                track_id = _whole(item.get("track_id"))
                found.append(Annotation(output, box, _caption(item, track_id), _colour(output, track_id)))
    return found


def _objects_with_box(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        if "box" in value:
            yield value
        else:
            for nested in value.values():
                yield from _objects_with_box(nested)
    elif isinstance(value, list):
        for nested in value:
            yield from _objects_with_box(nested)


def _box(raw: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        return None
    x1, y1, x2, y2 = (float(v) for v in raw)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _whole(value: Any) -> Any:
    """Struct numbers are doubles on the wire: track id 3 arrives as 3.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _caption(item: Mapping[str, Any], track_id: Any) -> str:
    parts = []
    if track_id is not None:
        parts.append(f"#{track_id}")
    if item.get("label") not in (None, ""):
        parts.append(str(item["label"]))
    if isinstance(item.get("score"), int | float):
        parts.append(f"{item['score']:.2f}")
    if item.get("text") not in (None, ""):
        parts.append(f'"{item["text"]}"')
    return _drawable(" ".join(parts))


def _drawable(text: str) -> str:
    return "".join(c if c in _DRAWABLE else "?" for c in text)


def _colour(output: str, track_id: Any) -> BoxColour:
    """A track keeps its colour in every frame; untracked objects take their output's colour."""
    key = f"track:{track_id}" if track_id is not None else f"output:{output}"
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def draw_result(frame: np.ndarray, result: Mapping[str, Any]) -> int:
    """Draw a result's boxes and captions onto `frame` in place; returns how many boxes were drawn."""
    height, width = frame.shape[:2]
    thickness = max(1, round(min(width, height) / 300))
    scale = max(0.4, min(width, height) / 1000)
    found = find_annotations(result)
    # OpenCV takes points as 32-bit ints: a box far off the frame is drawn clipped to this margin.
    reach = 4 * max(width, height)
    for item in found:
        x1, y1, x2, y2 = (min(max(round(v), -reach), reach) for v in item.box)
        cv2.rectangle(frame, (x1, y1), (x2, y2), item.colour, thickness, cv2.LINE_AA)
        if item.caption:
            _label(frame, item.caption, (x1, y1), item.colour, scale)
    return len(found)


def _label(frame: np.ndarray, text: str, corner: tuple[int, int], colour: BoxColour, scale: float) -> None:
    """Caption on a filled tab above the box's top-left corner (inside the box at the top edge)."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = corner
    top = y - text_height - baseline - 2 if y - text_height - baseline - 2 >= 0 else y
    cv2.rectangle(frame, (x, top), (x + text_width + 4, top + text_height + baseline + 2), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
    cv2.putText(frame, text, (x + 2, top + text_height + 1), FONT, scale, ink, 1, cv2.LINE_AA)


class _FrameSampler:
    """Keeps `wanted` frames, as thumbnails, spread evenly over the frames the sheet should show.

    With `candidates` (the frames with results), the picks are made up front among them, evenly
    by rank with the first and the last included (all of them when there are fewer): spreading
    over the span of their indices instead would, with sparse results (`--stride 5`), mostly
    pick frames with nothing drawn. Without candidates any frame may be shown: with a known
    `last` frame the picks are made up front too; without it (the container does not say),
    every `stride`-th frame is kept, and when twice the wanted number are kept, every other one
    is dropped and the stride doubles, so memory stays bounded.
    """

    def __init__(
        self, wanted: int, thumbnail_width: int, candidates: Iterable[int] | None = None, last: int | None = None
    ) -> None:
        self.wanted = wanted
        self.thumbnail_width = thumbnail_width
        self.picks: set[int] | None = None
        if wanted > 0 and candidates is not None:
            self.picks = _spread(sorted(candidates), wanted)
        elif wanted > 0 and last is not None:
            self.picks = _spread(range(last + 1), wanted)
        self.stride = 1
        self.kept: list[tuple[int, np.ndarray]] = []

    def offer(self, frame_index: int, frame: np.ndarray) -> None:
        if self.wanted <= 0:
            return
        if self.picks is not None:
            if frame_index in self.picks:
                self.kept.append((frame_index, self._thumbnail(frame)))
            return
        if frame_index % self.stride:
            return
        self.kept.append((frame_index, self._thumbnail(frame)))
        if len(self.kept) >= 2 * self.wanted:
            self.kept = [entry for entry in self.kept if entry[0] % (2 * self.stride) == 0]
            self.stride *= 2

    def _thumbnail(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        size = (self.thumbnail_width, max(1, round(height * self.thumbnail_width / width)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    def sample(self) -> list[tuple[int, np.ndarray]]:
        if len(self.kept) <= self.wanted:
            return list(self.kept)
        positions = np.linspace(0, len(self.kept) - 1, self.wanted).round().astype(int)
        return [self.kept[p] for p in positions]


def _spread(indices: Sequence[int], wanted: int) -> set[int]:
    """`wanted` of the sorted `indices`, evenly by position, the first and the last included; all if fewer."""
    if len(indices) <= wanted:
        return set(indices)
    return {indices[p] for p in np.linspace(0, len(indices) - 1, wanted).round().astype(int)}


def contact_sheet(thumbnails: list[tuple[int, np.ndarray]], columns: int = 4) -> np.ndarray:
    """Tile captioned thumbnails (all the same size) in rows, on a dark background."""
    if not thumbnails:
        raise RenderError("no frames to put on a contact sheet")
    tile_height, tile_width = thumbnails[0][1].shape[:2]
    columns = min(columns, len(thumbnails))
    rows = math.ceil(len(thumbnails) / columns)
    gap = 4
    sheet = np.full((rows * (tile_height + gap) + gap, columns * (tile_width + gap) + gap, 3), 32, np.uint8)
    for position, (frame_index, thumbnail) in enumerate(thumbnails):
        top = gap + (position // columns) * (tile_height + gap)
        left = gap + (position % columns) * (tile_width + gap)
        sheet[top:top + tile_height, left:left + tile_width] = thumbnail
        _label(sheet, f"frame {frame_index}", (left, top), (32, 32, 32), 0.45)
    return sheet


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
    Names that are not UTF-8 are given to OpenCV as `_OpenCvNames` says.
    """
    with _OpenCvNames() as names:
        return _render_video(names, video, results, output, snapshot, snapshot_frames, thumbnail_width)


def _render_video(
    names: _OpenCvNames,
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
    if snapshot is not None and not cv2.haveImageWriter(_plain(os.fspath(snapshot))):
        raise RenderError(f"cannot write a contact sheet to {str(snapshot)!r}: name a .png or .jpg file")
    capture = cv2.VideoCapture(names.of(Path(video)))
    if not capture.isOpened():
        raise RenderError(f"cannot open video {str(video)!r}")
    partial = _partial_name(written)
    writer: cv2.VideoWriter | None = None
    declared_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    sampler = _FrameSampler(
        snapshot_frames if snapshot is not None else 0,
        thumbnail_width,
        candidates=results.keys() if results else None,
        last=declared_frames - 1 if declared_frames > 0 else None,
    )
    frames_written = frames_annotated = boxes_drawn = 0
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps > 0 and math.isfinite(fps) else _FALLBACK_FPS
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if writer is None:
                writer = _open_writer(names.of_new(partial), output_path, fourcc, fps, frame)
            result = results.get(frames_written)
            if result is not None:
                boxes_drawn += draw_result(frame, result)
                frames_annotated += 1
            writer.write(frame)
            sampler.offer(frames_written, frame)
            frames_written += 1
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames_written == 0:
        partial.unlink(missing_ok=True)
        raise RenderError(f"no frame could be decoded from {str(video)!r}")
    if (problem := _written_video_problem(names.of_new(partial), frames_written)) is not None:
        partial.unlink(missing_ok=True)
        raise RenderError(f"writing {str(output_path)!r} failed ({problem}); is the disk full?")
    partial.replace(written)
    sampled = sampler.sample()
    if snapshot is not None and not sampled:
        # Every result is past the video's end (results of another video): show the video itself.
        sampled = _sample_video(names.of(written), snapshot_frames, thumbnail_width, frames_written)
    if snapshot is not None and not _write_image(Path(snapshot), contact_sheet(sampled), names):
        raise RenderError(f"cannot write the contact sheet {str(snapshot)!r}")
    beyond = sum(1 for index in results if index >= frames_written)
    return RenderSummary(frames_written, frames_annotated, boxes_drawn, len(sampled), beyond)


def quiet_opencv_logs() -> None:
    """Keeps OpenCV's and FFmpeg's log lines (`[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not
    found`, `[ WARN:0@0.02] global loadsave.cpp ...`) off stderr: `render_video` reports what
    fails itself. OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, as it opens its first video, so this
    must come before; a level the user set (OPENCV_FFMPEG_LOGLEVEL, OPENCV_LOG_LEVEL) is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", _FFMPEG_QUIET)
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class _OpenCvNames:
    """File names OpenCV can take, for any file.

    OpenCV's Python binding converts a name to UTF-8, and crashes the process (SIGSEGV) on the
    lone surrogates that stand for bytes that are not UTF-8 in a name given on the command line.
    Such a file, or the folder of one to create, is reached through a symbolic link with a plain
    name in a private temporary folder, removed at the end.
    """

    def __init__(self) -> None:
        self._folder: str | None = None
        self._links = 0

    def __enter__(self) -> _OpenCvNames:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def of(self, path: Path) -> str:
        """The name of an existing file (or folder): its own, or a link's."""
        if is_utf8(str(path)):
            return str(path)
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="videodag-render-")
        self._links += 1
        link = os.path.join(self._folder, f"{self._links}{_plain(path.suffix)}")
        if not is_utf8(link):
            raise RenderError(f"{str(path)!r}: OpenCV takes only UTF-8 names, and the temporary folder "
                              f"{self._folder!r} it could be linked from has none either; set TMPDIR")
        os.symlink(os.path.abspath(path), link)
        return link

    def of_new(self, path: Path) -> str:
        """The name of a file to create, whose own name is plain (see `_partial_name`): in its folder, through a link
        to the folder if need be."""
        return os.path.join(self.of(path.parent), path.name)


def _plain(name: str) -> str:
    """`name` with what is not UTF-8 in it as "?"."""
    return name.encode("utf-8", "replace").decode("utf-8")


def _partial_name(path: Path) -> Path:
    """Where `path` is written first, to be renamed over it at the end: hidden, beside it, with its
    suffix (which OpenCV picks the format by), and a name OpenCV can take whatever `path`'s. A
    name that is not UTF-8 gets a hash of its bytes too: `r\\xe9.mp4` and `r\\xe8.mp4`, both
    `r?.mp4` to OpenCV, rendered at once, shared one partial file."""
    stem = _plain(path.stem)
    if not is_utf8(path.name):
        stem += "~" + hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8]
    return Path(beside(str(path.with_name(stem)), ".", f".partial{_plain(path.suffix)}"))


def _write_image(path: Path, image: np.ndarray, names: _OpenCvNames) -> bool:
    """Writes `path` under its partial name and renames it, so that it is never half-written;
    through a symbolic link, whose target is replaced."""
    written = Path(os.path.realpath(path))
    partial = _partial_name(written)
    if not cv2.imwrite(names.of_new(partial), image):
        partial.unlink(missing_ok=True)
        return False
    partial.replace(written)
    return True


def _sample_video(path: str, wanted: int, thumbnail_width: int, frames: int) -> list[tuple[int, np.ndarray]]:
    sampler = _FrameSampler(wanted, thumbnail_width, last=frames - 1)
    capture = cv2.VideoCapture(path)
    try:
        for index in range(frames):
            ok, frame = capture.read()
            if not ok:
                break
            sampler.offer(index, frame)
    finally:
        capture.release()
    return sampler.sample()


def _written_video_problem(path: str, frames_written: int) -> str | None:
    """What is wrong with the video just written, read back: OpenCV's writer reports no failed
    write (a full disk leaves an MP4 without its index, an AVI without its count), only
    warnings on stderr."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened() or not capture.read()[0]:
            return "it cannot be read back"
        held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if held <= 0:  # no count declared, as a cut AVI: count the frames (grabbed, not converted)
            held = 1 + sum(1 for _ in iter(capture.grab, False))
        if held < frames_written - 1:  # Matroska's count is estimated from its duration
            return f"it holds {held} of the {frames_written} frames"
        return None
    finally:
        capture.release()


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
