"""The boxes of an ISO base media file (MP4, QuickTime), read header by header.

Only headers are read, each read bounded, and a walk stops at the first size that does not
fit: the file is hostile until FFmpeg has opened it, and may still be arriving.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np

_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")
MAX_TOP_LEVEL_BOXES = 100_000  # a fragmented MP4 has two a fragment
_FILES_REMEMBERED = 16
_MAX_CHILDREN = 4096
# Box headers read inside a `moov`, all walks together: a real one has a few dozen a track.
MAX_INDEX_HEADERS = 20_000
_MAX_TABLE_BYTES = 64 * 1024 * 1024  # millions of runs: a frame rate alternating 33 and 34 ms has a run a frame


class SeekableStream(Protocol):
    """What is read: a file, or an upload still arriving (`GrowingFileReader`)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


def boxes(stream: SeekableStream, start: int, end: int | None, most: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes from `start` to `end` (None: the whole file,
    which may still be arriving), at most `most` of them; a malformed size ends the walk."""
    position = start
    for _ in range(most):
        if end is not None and position + _HEADER.size > end:
            return
        stream.seek(position)
        header = _read_exactly(stream, _HEADER.size)
        if header is None:
            return
        size, kind = _HEADER.unpack(header)
        header_size = _HEADER.size
        if size == 1:  # the size follows as 64 bits
            large = _read_exactly(stream, _LARGE_SIZE.size)
            if large is None:
                return
            (size,) = _LARGE_SIZE.unpack(large)
            header_size += _LARGE_SIZE.size
        elif size == 0:  # the box runs to the end of its container
            if end is None:
                return  # to the end of a file that may still be arriving: the last box, whatever it is
            size = end - position
        if size < header_size or (end is not None and position + size > end):
            return  # malformed: stop rather than guess
        yield kind, position + header_size, position + size
        position += size


class TooManyBoxes(ValueError):
    """More box headers than a `HeaderBudget` allows: a file made to keep its reader busy."""


class HeaderBudget:
    """Box headers left to read, shared by the walks through one `moov`: its tracks, each with
    its boxes, may each be read whole, but not thousands of tracks of thousands of boxes."""

    def __init__(self, headers: int = MAX_INDEX_HEADERS) -> None:
        self._left = headers

    def walk(self, file: SeekableStream, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        """`boxes` from `start` to `end`, each header charged; raises TooManyBoxes past the budget."""
        for box in boxes(file, start, end, _MAX_CHILDREN):
            self._left -= 1
            if self._left < 0:
                raise TooManyBoxes("more boxes than a real file's index holds")
            yield box

    def first(self, file: SeekableStream, kind: bytes, start: int, end: int) -> tuple[int, int] | None:
        """(payload start, end) of the first box of `kind` from `start` to `end`, in one walk."""
        return next(((payload, box_end) for found, payload, box_end in self.walk(file, start, end)
                     if found == kind), None)


_moov_places: OrderedDict[tuple[int, int, int, int], tuple[int, int]] = OrderedDict()
_moov_places_lock = threading.Lock()


def find_moov(file: BinaryIO) -> tuple[int, int] | None:
    """(payload start, end) of the `moov` among the file's first `MAX_TOP_LEVEL_BOXES` top-level
    boxes; None without one.

    Where it was found is remembered for the last few files as they stand (device, inode, size,
    modification time): the probe's readers each ask, and an upload of 100,000 small boxes
    before its `moov` cost each of their walks half a second. A place remembered is used only
    while a `moov` header still ends there, as a file changed in place within one tick of its
    clock would not say otherwise."""
    stat = os.fstat(file.fileno())
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _moov_places_lock:
        remembered = _moov_places.get(identity)
        if remembered is not None:
            _moov_places.move_to_end(identity)
    if remembered is not None and _moov_header_ends_at(file, *remembered):
        return remembered
    place = next(((payload, end) for kind, payload, end in boxes(file, 0, stat.st_size, MAX_TOP_LEVEL_BOXES)
                  if kind == b"moov"), None)
    if place is not None:
        with _moov_places_lock:
            _moov_places[identity] = place
            while len(_moov_places) > _FILES_REMEMBERED:
                _moov_places.popitem(last=False)
    return place


def _moov_header_ends_at(file: BinaryIO, payload: int, end: int) -> bool:
    """Whether a `moov` box of that size (its size in 32 or 64 bits) has its header just before `payload`."""
    for header_size in (_HEADER.size, _HEADER.size + _LARGE_SIZE.size):
        if payload >= header_size:
            file.seek(payload - header_size)
            header = file.read(header_size)
            if len(header) == header_size:
                size, kind = _HEADER.unpack(header[:_HEADER.size])
                if size == 1 and header_size > _HEADER.size:
                    (size,) = _LARGE_SIZE.unpack(header[_HEADER.size:])
                if kind == b"moov" and size == end - payload + header_size:
                    return True
    return False


def first_video_track(file: BinaryIO) -> tuple[int, int] | None:
    """(payload start, end) of the first video track's `trak` box, the track FFmpeg decodes;
    None without one, or in an index of more boxes than a real one holds (`HeaderBudget`)."""
    moov = find_moov(file)
    if moov is None:
        return None
    budget = HeaderBudget()
    try:
        for kind, payload, end in budget.walk(file, *moov):
            if kind == b"trak" and is_video_track(file, payload, end, budget):
                return payload, end
    except TooManyBoxes:
        return None
    return None


def child(file: BinaryIO, path: tuple[bytes, ...], start: int, end: int) -> tuple[int, int] | None:
    """(payload start, end) of the box at `path` (types, outermost first) below the one spanning start..end."""
    for name in path:
        found = next(((payload, box_end) for kind, payload, box_end in boxes(file, start, end, _MAX_CHILDREN)
                      if kind == name), None)
        if found is None:
            return None
        start, end = found
    return start, end


def sample_runs(file: BinaryIO, payload: int, end: int, *, signed: bool = False,
                most: int | None = None) -> np.ndarray:
    """A sample table of runs (`stts`: sample count and duration; `ctts`: sample count and
    composition offset, `signed` as FFmpeg reads it) as an n x 2 int64 array; raises
    ValueError when the count of runs does not fit in the box, is implausibly large, or
    exceeds `most` (a table of more runs than the track has samples is not read at all)."""
    file.seek(payload + 4)  # version and flags
    (count,) = struct.unpack(">I", file.read(4))
    if count * 8 > min(end - payload - 8, _MAX_TABLE_BYTES) or (most is not None and count > most):
        raise ValueError(f"{count} runs do not fit in their box")
    data = file.read(count * 8)
    if len(data) != count * 8:
        raise ValueError("the table is cut short")
    runs = np.frombuffer(data, dtype=">u4").reshape(-1, 2).astype(np.int64)
    if signed:
        runs[:, 1] = np.frombuffer(data, dtype=">i4").reshape(-1, 2)[:, 1]
    return runs


def header_timescale(file: BinaryIO, payload: int) -> int:
    """The timescale (units a second) of a movie or media header (`mvhd`, `mdhd`), which share
    its place: after version, flags and two dates of 32 or, in version 1, 64 bits."""
    file.seek(payload)
    version = file.read(1)
    file.seek(payload + (20 if version == b"\x01" else 12))
    (timescale,) = struct.unpack(">I", file.read(4))
    return int(timescale)


def is_video_track(file: BinaryIO, start: int, end: int, budget: HeaderBudget) -> bool:
    """Whether the `trak` spanning start..end is a video track (its handler says `vide`)."""
    media = budget.first(file, b"mdia", start, end)
    handler = budget.first(file, b"hdlr", *media) if media is not None else None
    if handler is None:
        return False
    file.seek(handler[0] + 8)  # version, flags, pre_defined
    return file.read(4) == b"vide"


def _read_exactly(stream: SeekableStream, count: int) -> bytes | None:
    """`count` bytes, or None when the stream ends first."""
    data = b""
    while len(data) < count:
        more = stream.read(count - len(data))
        if not more:
            return None
        data += more
    return data
