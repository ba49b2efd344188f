"""Which kind of container a file is, told by its first 12 bytes.

The reader trusts a declared frame count, seeks, and numbers frames past damage only in the
containers where that was verified; OpenCV does not say which container it opened, so the
file's head is read here instead.
"""

from __future__ import annotations

from pathlib import Path

# Containers whose count of video frames is stored: MP4 and QuickTime in their sample tables
# (a box of these types comes first), AVI in its header. For the others (Matroska, WebM,
# MPEG-TS and -PS, raw streams) FFmpeg estimates the count from the duration, the longest
# stream's: audio that outlasts the video, or a second, longer video stream, stretches it,
# so falling short of it does not mean the file was cut.
_MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def stores_frame_count(path: Path) -> bool:
    """An MP4, QuickTime or AVI file, whose declared frame count is stored, not estimated."""
    head = _head(path)
    return head[4:8] in _MP4_FIRST_BOXES or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def is_iso_media(path: Path) -> bool:
    """An MP4 or QuickTime file (ISO base media boxes), as `stores_frame_count` tells them."""
    return _head(path)[4:8] in _MP4_FIRST_BOXES


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(12)
    except OSError:
        return b""
