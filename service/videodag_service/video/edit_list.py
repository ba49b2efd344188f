"""How long an MP4's or QuickTime's video track is shown, as its edit list says.

An MP4's frame count (the samples its index lists) is not always the number of frames a
decoder shows: an edit list may hide some, as in every file trimmed with `ffmpeg -ss ...
-c copy` or by a phone's editor, which keep the frames from the key frame before the cut
point and hide those before it. The frames a run should find are those the edit list shows:
its segments' durations (in the movie's timescale, from `mvhd`) times the frame rate.

Only box headers and three small boxes are read (`mvhd`, each track's `hdlr` and `elst`).
Anything missing or malformed gives None: the caller keeps the declared count.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from videodag_service.media.mp4_boxes import (
    HeaderBudget,
    TooManyBoxes,
    boxes,
    find_moov,
    header_timescale,
    is_video_track,
)

_MAX_CHILDREN = 4096
_MAX_EDITS = 4096
_EMPTY_EDIT = -1  # an edit of no media: a delay before the track starts, no frames shown


def shown_seconds(path: str | os.PathLike[str]) -> float | None:
    """Seconds of the first video track the edit list shows; None without an edit list (or one
    of unknown length, as a fragmented MP4's), or when the file cannot be read as an MP4 (an
    index of more boxes than a real one holds included: `HeaderBudget`)."""
    try:
        with open(path, "rb") as file:
            moov = find_moov(file)
            return None if moov is None else _video_track_shown_seconds(file, *moov, HeaderBudget())
    except (OSError, struct.error, TooManyBoxes):
        return None


def _video_track_shown_seconds(file: BinaryIO, start: int, end: int, budget: HeaderBudget) -> float | None:
    timescale = None
    for kind, payload, child_end in budget.walk(file, start, end):
        if kind == b"mvhd":
            timescale = header_timescale(file, payload)
        elif kind == b"trak" and is_video_track(file, payload, child_end, budget):
            units = _edited_units(file, payload, child_end)
            return units / timescale if units and timescale else None
    return None


def _edited_units(file: BinaryIO, start: int, end: int) -> int:
    """The summed durations (movie timescale) of the track's edits that show media; 0 if none."""
    for kind, payload, child_end in boxes(file, start, end, _MAX_CHILDREN):
        if kind != b"edts":
            continue
        for inner, inner_payload, inner_end in boxes(file, payload, child_end, _MAX_CHILDREN):
            if inner == b"elst":
                return _shown_units(file, inner_payload, inner_end)
    return 0


def _shown_units(file: BinaryIO, payload: int, end: int) -> int:
    file.seek(payload)
    version, count = struct.unpack(">B3xI", file.read(8))
    entry = struct.Struct(">QqI" if version == 1 else ">IiI")  # duration, media time, rate
    if count > (end - payload - 8) // entry.size:
        raise struct.error(f"{count} edits do not fit in their box")
    total = 0
    for _ in range(min(count, _MAX_EDITS)):
        duration, media_time, _rate = entry.unpack(file.read(entry.size))
        if media_time != _EMPTY_EDIT:
            total += duration
    return total
