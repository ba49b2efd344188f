"""Whether an AVI can be seeked to a frame index exactly: no frame of its index is empty.

OpenCV (FFmpeg) seeks an AVI by the slots of its index, and a capture card records a dropped
frame as an empty slot, which decoding skips: after a seek every frame index would be off by
the frames dropped before it, while reading from the start counts real frames only. An AVI
whose index lists no empty video chunk has slots and frames one to one.

The index read is the video stream's OpenDML one (`indx`, pointing at `ix##` chunks), which
covers a file of any size, as FFmpeg writes it and as every file over 1 GB must have it; else
the legacy `idx1`, unless a second RIFF (`AVIX`) follows, which `idx1` does not cover. Only
chunk headers and the index are read. Anything else, or a file that cannot be read as an
AVI, says no: the caller decodes from the start, which is slower but always right.

An upload writes the index, so its cost is bounded: at most `_MAX_INDEX_BYTES` of it is read,
its entries are checked by numpy rather than one by one in Python, and index chunks that
overlap (one stretch of entries read again and again) say no.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

_CHUNK_HEADER = struct.Struct("<4sI")
_LEGACY_ENTRY = np.dtype([("chunk_id", "S4"), ("flags", "<u4"), ("offset", "<u4"), ("size", "<u4")])
_SUPER_INDEX_HEADER = struct.Struct("<HBBI4s12x")  # longs per entry, subtype, type, entries, chunk id
_SUPER_INDEX_ENTRY = struct.Struct("<QII")  # offset of an ix## chunk, its size, its duration
_STANDARD_INDEX_HEADER = struct.Struct("<HBBI4sQ4x")  # longs per entry, subtype, type, entries, id, base
_STANDARD_INDEX_ENTRY = np.dtype([("offset", "<u4"), ("size", "<u4")])  # size's bit 31: not a key frame
_INDEX_OF_INDEXES, _INDEX_OF_CHUNKS = 0x00, 0x01
_VIDEO_CHUNK_KINDS = (b"dc", b"db")  # compressed and uncompressed video, after the stream number
_MAX_INDEX_BYTES = 64 * 1024 * 1024  # millions of frames
_MAX_CHUNKS = 10_000
_MAX_INDEX_CHUNKS = 100_000


class _NotSeekable(Exception):
    """The file is no AVI, or not one whose index can be trusted."""


def seeks_exactly(path: str | os.PathLike[str]) -> bool:
    """Whether the file is an AVI whose index has a video frame in every video slot."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return False
            size = os.fstat(file.fileno()).st_size
            riff_end = min(size, 8 + struct.unpack("<I", head[4:8])[0])
            video_index = _video_super_index(file, riff_end)
            if video_index is not None:
                scanned = [0]  # bytes of standard index read so far, over all of them
                return not any(_standard_index_has_empty_slot(file, offset, size, scanned)
                               for offset in _apart(file, sorted(set(video_index))))
            file.seek(riff_end)
            if file.read(4) == b"RIFF":  # an AVIX beyond what idx1 covers
                return False
            return not _legacy_index_has_empty_video_slot(file, riff_end, size)
    except (OSError, ValueError, OverflowError, struct.error, _NotSeekable):  # unreadable, cut short, or odd
        return False


def _chunks(file: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(kind, payload offset, payload length) of the chunks in [start, end); a LIST's kind is its list type."""
    offset = start
    for _ in range(_MAX_CHUNKS):
        if offset + _CHUNK_HEADER.size > end:
            return
        file.seek(offset)
        kind, length = _CHUNK_HEADER.unpack(file.read(_CHUNK_HEADER.size))
        payload = offset + _CHUNK_HEADER.size
        if kind == b"LIST":
            yield file.read(4), payload + 4, length - 4
        else:
            yield kind, payload, length
        offset = payload + length + (length & 1)  # chunks are padded to an even size
    raise _NotSeekable


def _video_super_index(file: BinaryIO, riff_end: int) -> list[int] | None:
    """The offsets of the video stream's `ix##` chunks, from its `indx`; None without one."""
    for kind, payload, length in _chunks(file, 12, riff_end):
        if kind != b"hdrl":
            continue
        for stream_kind, stream_payload, stream_length in _chunks(file, payload, payload + length):
            if stream_kind == b"strl":
                offsets = _stream_super_index(file, stream_payload, stream_payload + stream_length)
                if offsets is not None:
                    return offsets
        return None
    return None


def _stream_super_index(file: BinaryIO, start: int, end: int) -> list[int] | None:
    is_video = False
    for kind, payload, length in _chunks(file, start, end):
        if kind == b"strh":
            file.seek(payload)
            is_video = file.read(4) == b"vids"
        elif kind == b"indx" and is_video:
            file.seek(payload)
            _longs, _subtype, index_type, count, _chunk_id = _SUPER_INDEX_HEADER.unpack(
                file.read(_SUPER_INDEX_HEADER.size))
            if index_type != _INDEX_OF_INDEXES or not 0 < count <= _MAX_INDEX_CHUNKS:  # none: an index never written
                raise _NotSeekable
            if count * _SUPER_INDEX_ENTRY.size > length - _SUPER_INDEX_HEADER.size:
                raise _NotSeekable
            entries = file.read(count * _SUPER_INDEX_ENTRY.size)
            return [offset for offset, _size, _duration in _SUPER_INDEX_ENTRY.iter_unpack(entries)]
    return None


def _apart(file: BinaryIO, offsets: list[int]) -> Iterator[int]:
    """`offsets` of index chunks, in order, each checked to start past the end of the one before."""
    end_of_previous = 0
    for offset in offsets:
        if offset < end_of_previous:
            raise _NotSeekable
        file.seek(offset)
        _kind, length = _CHUNK_HEADER.unpack(file.read(_CHUNK_HEADER.size))
        end_of_previous = offset + _CHUNK_HEADER.size + length
        yield offset


def _standard_index_has_empty_slot(file: BinaryIO, offset: int, file_size: int, scanned: list[int]) -> bool:
    if offset + _CHUNK_HEADER.size + _STANDARD_INDEX_HEADER.size > file_size:
        raise _NotSeekable
    file.seek(offset)
    _kind, length = _CHUNK_HEADER.unpack(file.read(_CHUNK_HEADER.size))
    _longs, _subtype, index_type, count, _chunk_id, _base = _STANDARD_INDEX_HEADER.unpack(
        file.read(_STANDARD_INDEX_HEADER.size))
    entries_bytes = count * _STANDARD_INDEX_ENTRY.itemsize
    scanned[0] += entries_bytes
    if (index_type != _INDEX_OF_CHUNKS or scanned[0] > _MAX_INDEX_BYTES
            or entries_bytes > length - _STANDARD_INDEX_HEADER.size or offset + length > file_size):
        raise _NotSeekable
    entries = np.frombuffer(file.read(entries_bytes), dtype=_STANDARD_INDEX_ENTRY)
    if len(entries) != count:
        raise _NotSeekable
    return bool(np.any(entries["size"] & 0x7FFFFFFF == 0))


def _legacy_index_has_empty_video_slot(file: BinaryIO, riff_end: int, file_size: int) -> bool:
    for kind, payload, length in _chunks(file, 12, riff_end):
        if kind == b"idx1":
            if length > _MAX_INDEX_BYTES or payload + length > file_size:
                raise _NotSeekable
            file.seek(payload)
            entries = np.frombuffer(file.read(length - length % _LEGACY_ENTRY.itemsize), dtype=_LEGACY_ENTRY)
            empty_ids = entries["chunk_id"][entries["size"] == 0]
            return any(chunk_id[2:4] in _VIDEO_CHUNK_KINDS for chunk_id in set(empty_ids.tolist()))
    raise _NotSeekable  # no index at all
