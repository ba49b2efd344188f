"""Whether an AVI can be seeked to a frame index exactly: no frame of its index is empty.

OpenCV (FFmpeg) seeks an AVI by the slots of its index, and a capture card records a dropped
frame as an empty slot, which decoding skips: after a seek every frame index would be off by
the frames dropped before it, while reading from the start counts real frames only. An AVI
whose legacy index (`idx1`) lists no empty video chunk, and which is no OpenDML file (a
second RIFF, `AVIX`, beyond what `idx1` covers), has slots and frames one to one.

Only chunk headers and the index are read. Anything else, or a file that cannot be read as
an AVI, says no: the caller decodes from the start, which is slower but always right.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

_CHUNK_HEADER = struct.Struct("<4sI")
_INDEX_ENTRY = struct.Struct("<4sIII")  # chunk id, flags, offset, size
_VIDEO_CHUNK_KINDS = (b"dc", b"db")  # compressed and uncompressed video, after the stream number
_MAX_INDEX_BYTES = 64 * 1024 * 1024  # 4 million frames
_MAX_TOP_LEVEL_CHUNKS = 10_000


def seeks_exactly(path: str | os.PathLike[str]) -> bool:
    """Whether the file is an AVI whose index has a video frame in every video slot."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return False
            size = os.fstat(file.fileno()).st_size
            riff_end = min(size, 8 + struct.unpack("<I", head[4:8])[0])
            index = _index_location(file, riff_end)
            file.seek(riff_end)
            if index is None or file.read(4) == b"RIFF":  # no index, or an OpenDML file's AVIX
                return False
            start, length = index
            if length > _MAX_INDEX_BYTES or start + length > size:
                return False
            file.seek(start)
            entries = file.read(length - length % _INDEX_ENTRY.size)
    except (OSError, struct.error):  # unreadable, or cut inside a chunk header
        return False
    return not any(chunk_id[2:4] in _VIDEO_CHUNK_KINDS and chunk_size == 0
                   for chunk_id, _flags, _offset, chunk_size in _INDEX_ENTRY.iter_unpack(entries))


def _index_location(file: BinaryIO, riff_end: int) -> tuple[int, int] | None:
    """Where the `idx1` chunk's entries start, and their length; None without one."""
    offset = 12
    for _ in range(_MAX_TOP_LEVEL_CHUNKS):
        if offset + _CHUNK_HEADER.size > riff_end:
            return None
        file.seek(offset)
        kind, length = _CHUNK_HEADER.unpack(file.read(_CHUNK_HEADER.size))
        if kind == b"idx1":
            return offset + _CHUNK_HEADER.size, length
        offset += _CHUNK_HEADER.size + length + (length & 1)  # chunks are padded to an even size
    return None
