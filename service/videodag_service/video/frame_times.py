"""When each frame of an MP4's or QuickTime's video track is presented, as its sample table says.

A seek lands by time, and OpenCV numbers the frame it reaches by that time at the average
frame rate, which is its index only while the frames are evenly spaced (`sample_spacing`).
In a file with frames dropped (a camera's hiccup), bunched, or a phone's rate lowered in the
dark, the table gives the index instead: the frame a seek lands on is looked up by its time
among all the frames' times, and the frames after it are counted from there. A late window
of such a file is then reached in a seek instead of decoding everything before it.

A frame is presented at its decoding time (the `stts` durations of the frames before it)
plus its composition offset (`ctts`, for B-frames), counted from the earliest of these:
FFmpeg starts the stream's clock there, and OpenCV's times count from that start. Tables
this cannot read exactly are refused (None), and the caller decodes from the start: an edit
list hiding frames at the start (a file cut with `-c copy`), more than one edit, two frames
at one time, or tables that do not all count the samples FFmpeg declares for the track it
decodes (`stsz`, the sample sizes, is the table FFmpeg reads them from: a table counting
others, or one of another track, would number frames that are not there). Their runs are
counted before they are expanded, so a table's cost is bounded by that declared count,
which the server's limits bound. Only box headers and six small boxes are read.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from videodag_service.media.mp4_boxes import child, first_video_track, header_timescale, sample_runs

_MAX_FRAMES = 1 << 22
"""19 hours at 60 fps; the table of times takes 8 bytes a frame (32 MiB here)."""
_MAX_EDITS = 4096
_EMPTY_EDIT = -1
_NORMAL_RATE = 0x00010000  # an edit's media rate, 16.16 fixed point


@dataclass(frozen=True)
class FrameTimes:
    """Every frame's presentation time in the track's `timescale`, in presentation order, the first at 0."""

    ticks: np.ndarray
    timescale: int

    def __len__(self) -> int:
        return len(self.ticks)

    def seconds(self, index: int) -> float:
        return float(self.ticks[index]) / self.timescale

    def last_before(self, seconds: float) -> int:
        """The index of the last frame presented before `seconds` (half a tick's margin); -1 if none."""
        return int(np.searchsorted(self.ticks, seconds * self.timescale - 0.5, side="left")) - 1

    def first_at_or_after(self, seconds: float) -> int:
        """The index of the first frame presented at `seconds` or later (half a tick's margin)."""
        return self.last_before(seconds) + 1

    def index_at(self, seconds: float) -> int | None:
        """The index of the frame presented at `seconds` (to within a quarter of a tick); None if
        no frame is: the decoder's clock and the table disagree, and the table is not used."""
        position = seconds * self.timescale
        index = int(np.searchsorted(self.ticks, position - 0.25, side="left"))
        if index < len(self.ticks) and abs(float(self.ticks[index]) - position) <= 0.25:
            return index
        return None


def frame_times(path: str | os.PathLike[str], frame_count: int) -> FrameTimes | None:
    """The first video track's frame times, given the `frame_count` FFmpeg declares for the
    track it decodes; None when its tables do not tell them exactly (see the module's notes;
    a fragmented MP4 keeps them in its fragments) or cannot be read."""
    if not 2 <= frame_count <= _MAX_FRAMES:
        return None
    try:
        with open(path, "rb") as file:
            track = first_video_track(file)
            return None if track is None else _track_frame_times(file, *track, frame_count)
    except (OSError, struct.error, ValueError):
        return None


def _track_frame_times(file: BinaryIO, track_start: int, track_end: int, frame_count: int) -> FrameTimes | None:
    header = child(file, (b"mdia", b"mdhd"), track_start, track_end)
    table = child(file, (b"mdia", b"minf", b"stbl"), track_start, track_end)
    durations = None if table is None else child(file, (b"stts",), *table)
    if header is None or table is None or durations is None or _sample_count(file, *table) != frame_count:
        return None
    timescale = header_timescale(file, header[0])
    decoding = _expanded(sample_runs(file, *durations, most=frame_count), frame_count)
    if decoding is None or timescale <= 0:
        return None
    presented = np.concatenate(([0], np.cumsum(decoding[:-1])))
    offsets_box = child(file, (b"ctts",), *table)
    if offsets_box is not None:
        offsets = _expanded(sample_runs(file, *offsets_box, signed=True, most=frame_count), frame_count)
        if offsets is None:
            return None
        presented += offsets
    earliest = int(presented.min())
    edits = child(file, (b"edts", b"elst"), track_start, track_end)
    if edits is not None and not _edits_show_from(file, *edits, earliest):
        return None
    ticks = np.sort(presented) - earliest
    if np.any(np.diff(ticks) <= 0):
        return None
    return FrameTimes(ticks, timescale)


def _sample_count(file: BinaryIO, table_start: int, table_end: int) -> int | None:
    """How many samples the track's sample sizes (`stsz`, or the compact `stz2`) list."""
    sizes = child(file, (b"stsz",), table_start, table_end) or child(file, (b"stz2",), table_start, table_end)
    if sizes is None:
        return None
    file.seek(sizes[0] + 8)  # version and flags, then the common size (stsz) or field size (stz2)
    (count,) = struct.unpack(">I", file.read(4))
    return int(count)


def _expanded(runs: np.ndarray, samples: int) -> np.ndarray | None:
    """One value a sample from (count, value) runs; None unless they cover exactly `samples`."""
    if int(runs[:, 0].sum()) != samples:
        return None
    return np.repeat(runs[:, 1], runs[:, 0])


def _edits_show_from(file: BinaryIO, payload: int, end: int, earliest: int) -> bool:
    """Whether the edit list shows the track from its earliest frame on, as FFmpeg then counts it:
    empty edits (a delay) and one edit of media at the normal rate starting no later than
    that frame."""
    file.seek(payload)
    version, count = struct.unpack(">B3xI", file.read(8))
    entry = struct.Struct(">QqI" if version == 1 else ">IiI")  # duration, media time, rate
    if count > min(_MAX_EDITS, (end - payload - 8) // entry.size):
        return False
    shown = [(media_time, rate) for _duration, media_time, rate in
             (entry.unpack(file.read(entry.size)) for _ in range(count)) if media_time != _EMPTY_EDIT]
    if not shown:
        return True
    if len(shown) > 1:
        return False
    media_time, rate = shown[0]
    return bool(rate == _NORMAL_RATE and media_time <= earliest)
