"""Whether an MP4's or QuickTime's video is shown mirrored, as its track's display matrix says.

A display matrix turns the stored picture into the shown one: a phone's rotation, or a
mirror (QuickTime's Flip Horizontal and Flip Vertical, some front cameras). OpenCV applies
only a rotation, the one FFmpeg reads off the matrix's first column, so a mirroring matrix
comes out wrong: a picture flipped left to right was shown upside down (rotated 180°), one
flipped top to bottom as stored. The shown picture is OpenCV's with one more flip (`flip_code`).

Only box headers and the track header (`tkhd`) are read.
"""

from __future__ import annotations

import os
import struct

from videodag_service.video.mp4_boxes import child, first_video_track

# Where the matrix starts in a `tkhd` payload: past version and flags, the times, track id and
# duration (32 or 64 bits each by version), then reserved, layer, group, volume.
_MATRIX_OFFSET = {0: 40, 1: 52}
_MATRIX = struct.Struct(">ii4xii")  # a, b, (u), c, d: 16.16 fixed point


def mirrors(path: str | os.PathLike[str]) -> bool:
    """Whether the first video track's display matrix mirrors the picture (its determinant is
    negative); False when there is none, or the file cannot be read as an MP4."""
    try:
        with open(path, "rb") as file:
            track = first_video_track(file, os.fstat(file.fileno()).st_size)
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
    return a * d - b * c < 0


def flip_code(rotation_degrees: float) -> int:
    """The `cv2.flip` code that turns OpenCV's picture, rotated by `rotation_degrees`, into the
    shown one of a mirroring matrix: the matrix mirrors the stored picture's vertical axis, which
    the rotation leaves vertical (0°, 180°) or turns horizontal (90°, 270°)."""
    return 0 if round(rotation_degrees / 90) % 2 == 0 else 1
