"""Whether an MP4 or QuickTime file was cut short, read from the sizes of its top-level boxes.

An MP4's frame count (the samples its index lists) is not the number of frames a decoder
shows: an edit list may hide some, as in every file trimmed with `ffmpeg -ss ... -c copy`
or by a phone's editor, which keeps the frames before the cut point's key frame and hides
them. Reading fewer frames than the count therefore does not say the file was cut. A file
that was cut (an upload or copy that stopped) says so itself: its last box, the media
(`mdat`) of a file with its index at the front or a fragment of a fragmented one,
declares more bytes than the file holds.

Only box headers are read; anything that is not a well-formed run of boxes is "not cut":
the caller then keeps to what the frame count says.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")
# A fragmented MP4 has two top-level boxes a fragment: room for hours of one-second fragments.
_MAX_TOP_LEVEL_BOXES = 100_000


def iso_file_cut_short(path: str | os.PathLike[str]) -> bool:
    """Whether the MP4/QuickTime file at `path` ends inside one of its top-level boxes."""
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            return _ends_inside_a_box(file, file_size)
    except OSError:
        return False


def _ends_inside_a_box(file: BinaryIO, file_size: int) -> bool:
    position = 0
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if position >= file_size:
            return False
        file.seek(position)
        header = file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return True  # the file stops inside a box header
        size, _kind = _HEADER.unpack(header)
        header_size = _HEADER.size
        if size == 1:  # the size follows as 64 bits
            large = file.read(_LARGE_SIZE.size)
            if len(large) < _LARGE_SIZE.size:
                return True
            (size,) = _LARGE_SIZE.unpack(large)
            header_size += _LARGE_SIZE.size
        elif size == 0:  # the last box, running to the end of the file whatever its length
            return False
        if size < header_size:
            return False  # malformed: no verdict
        if position + size > file_size:
            return True
        position += size
    return False

