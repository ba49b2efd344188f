"""Whether an MP4's or QuickTime's video is shown mirrored, as its track's display matrix says.

A display matrix turns the stored picture into the shown one: a phone's rotation, or a
mirror (QuickTime's Flip Horizontal and Flip Vertical, some front cameras). OpenCV applies
only a rotation, the one FFmpeg reads off the matrix's first column, so a mirroring matrix
comes out wrong: a picture flipped left to right is shown upside down (rotated 180°), one
flipped top to bottom as stored. The shown picture is OpenCV's with one more flip
(`mirror_flip`): the service's reader and the client's renderer both apply it, so the boxes
found in a frame are drawn on the same picture.

Only box headers and the track header (`tkhd`) are read.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import cv2

from videodag_service.media.container import is_iso_media
from videodag_service.media.mp4_boxes import child, first_video_track

# Where the matrix starts in a `tkhd` payload: past version and flags, the times, track id and
# duration (32 or 64 bits each by version), then reserved, layer, group, volume.
_MATRIX_OFFSET = {0: 40, 1: 52}
_MATRIX = struct.Struct(">ii4xii")  # a, b, (u), c, d: 16.16 fixed point


def mirrors(path: str | os.PathLike[str]) -> bool:
    """Whether the first video track's display matrix mirrors the picture (its determinant is
    negative); False when there is none, or the file cannot be read as an MP4."""
    try:
        with open(path, "rb") as file:
            track = first_video_track(file)
            header = None if track is None else child(file, (b"tkhd",), *track)
            if header is None:
                return False
            file.seek(header[0])
            offset = _MATRIX_OFFSET.get(file.read(1)[0])
            if offset is None or header[0] + offset + _MATRIX.size > header[1]:
                return False
            file.seek(header[0] + offset)
            a, b, c, d = _MATRIX.unpack(file.read(_MATRIX.size))
    except (OSError, struct.error, IndexError):
        return False
    return bool(a * d - b * c < 0)


def flip_code(rotation_degrees: float) -> int:
    """The `cv2.flip` code that turns OpenCV's picture, rotated by `rotation_degrees`, into the
    shown one of a mirroring matrix: the matrix mirrors the stored picture's vertical axis, which
    the rotation leaves vertical (0°, 180°) or turns horizontal (90°, 270°)."""
    return 0 if round(rotation_degrees / 90) % 2 == 0 else 1


def mirror_flip(path: str | os.PathLike[str], capture: cv2.VideoCapture) -> int | None:
    """The `cv2.flip` code that turns the frames `capture` (OpenCV, rotating them as it does by
    default) decodes from `path` into the ones a player shows; None when they need no flip: the
    file is no MP4 or QuickTime file, or its matrix does not mirror, or it is no regular file (a
    pipe or FIFO, `videodag render /dev/stdin`: its bytes are OpenCV's to read, once, and reading
    them here would take them from its stream, or wait for a writer long gone). May raise cv2.error."""
    if not Path(path).is_file() or not is_iso_media(Path(path)) or not mirrors(path):
        return None
    rotation = capture.get(cv2.CAP_PROP_ORIENTATION_META)
    return flip_code(rotation if math.isfinite(rotation) and rotation > 0 else 0.0)
