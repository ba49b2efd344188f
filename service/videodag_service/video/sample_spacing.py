"""Whether an MP4's or QuickTime's video frames are evenly spaced in time, as its sample table says.

A seek by frame number lands by time: OpenCV turns the number into a time at the average
frame rate and numbers the frame it reaches from that frame's time. In a file whose frames
keep an even spacing the two agree; in one with frames dropped (a camera's or a stream's
hiccup) or bunched (a burst of extra frames) every frame after the gap gets the number its
time suggests, not its place in the file, and a run with a start offset would report other
frame indices than a run from the start. Such a file is decoded from its start instead.

The decoding times of the first video track (`stts`: runs of samples of one duration) are
compared with an even grid through its first and last frame. Only box headers and that one
table are read, and only when it counts the frames FFmpeg declares (the server's limits bound
that count): a table of other frames does not tell of these, and an upload's table of
millions of runs cost seconds and hundreds of MB before the count was checked.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from videodag_service.media.mp4_boxes import child, first_video_track, sample_runs

_TOLERANCE = 0.25
"""How far from the even grid a frame may be, in frame periods, and still be numbered by its
time: timescales that cannot hold the period exactly (29.97 fps in milliseconds) stay far within it."""


def frames_evenly_spaced(path: str | os.PathLike[str], frame_count: int) -> bool | None:
    """Whether the first video track's `frame_count` frames (as FFmpeg declares them) sit on an
    even grid; None when the file has no such table to tell (a fragmented MP4 lists its frames
    in its fragments), its table counts other frames, or it cannot be read."""
    try:
        with open(path, "rb") as file:
            track = first_video_track(file)
            durations = None if track is None else child(file, (b"mdia", b"minf", b"stbl", b"stts"), *track)
            if durations is None:
                return None
            runs = sample_runs(file, *durations, most=frame_count)
    except (OSError, struct.error, ValueError):
        return None
    return _evenly_spaced(runs) if int(runs[:, 0].sum()) == frame_count else None


def _evenly_spaced(runs: np.ndarray) -> bool | None:
    """Whether every frame's start, and the end of the last, lies within `_TOLERANCE` periods of
    the even grid of the track's average period, which OpenCV's frame rate is: a last frame
    lasting much longer or shorter than the others shifts that rate, and every seek with it.
    Between the ends of a run the distance changes linearly, so the runs' ends are all that
    need checking."""
    runs = runs[runs[:, 0] > 0]
    frames = int(runs[:, 0].sum())
    if frames < 3:
        return None
    starts_of_runs = np.concatenate(([0], np.cumsum(runs[:, 0])))  # and the index just past the last frame
    times_of_run_starts = np.concatenate(([0], np.cumsum(runs[:, 0] * runs[:, 1])))
    if times_of_run_starts[-1] <= 0:
        return None
    period = times_of_run_starts[-1] / frames
    distance = np.abs(times_of_run_starts - starts_of_runs * period)
    return bool(distance.max() <= _TOLERANCE * period)
