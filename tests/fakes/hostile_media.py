"""Hostile variants of real video files: truncations, bit flips and headers that lie.

Every helper takes a file's bytes and returns new bytes. The walkers (`mp4_boxes`,
`riff_chunks`) find where a lie goes: a box's or chunk's size, an AVI header's frame count,
the frame size an AVI and its JPEG frames declare. The structures are parsed only as far
as the lies need; a file these walkers cannot parse raises ValueError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

# MP4 boxes that hold only other boxes, and those that hold boxes after a fixed header.
_MP4_CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "edts", "dinf", "mvex", "moof", "traf"})
_MP4_HEADER_THEN_BOXES = {"stsd": 8, "dref": 8, "avc1": 78, "hvc1": 78, "mp4v": 78}
_RIFF_LISTS = frozenset({b"RIFF", b"LIST"})
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3})


@dataclass(frozen=True)
class Box:
    """One MP4 box: where it starts, its declared size, its four-letter type."""

    offset: int
    size: int
    kind: str
    depth: int


@dataclass(frozen=True)
class RiffChunk:
    """One RIFF (AVI) chunk: where its header starts, its id (or list type) and data size."""

    offset: int
    chunk_id: str
    size: int

    @property
    def data_offset(self) -> int:
        return self.offset + 8


def truncated(data: bytes, length: int) -> bytes:
    """The first `length` bytes, as an upload cut short would leave them."""
    return data[: max(0, length)]


def with_flipped_bits(data: bytes, bit_positions: Iterable[int]) -> bytes:
    """`data` with each given bit inverted (positions modulo the file's bit length)."""
    mutated = bytearray(data)
    for position in bit_positions:
        position %= len(mutated) * 8
        mutated[position // 8] ^= 1 << (position % 8)
    return bytes(mutated)


def mp4_boxes(data: bytes) -> list[Box]:
    """Every box of an MP4/MOV file, depth first, down to the sample descriptions."""
    boxes: list[Box] = []
    _walk_boxes(data, 0, len(data), 0, boxes)
    if not boxes:
        raise ValueError("no MP4 boxes found")
    return boxes


def with_box_size(data: bytes, box: Box, size: int) -> bytes:
    """`data` with `box`'s 32-bit size field set to `size` (a lie unless it is the true size)."""
    mutated = bytearray(data)
    struct.pack_into(">I", mutated, box.offset, size & 0xFFFFFFFF)
    return bytes(mutated)


def with_riff_chunk_size(data: bytes, chunk: RiffChunk, size: int) -> bytes:
    """`data` with `chunk`'s 32-bit little-endian size field set to `size`."""
    mutated = bytearray(data)
    struct.pack_into("<I", mutated, chunk.offset + 4, size & 0xFFFFFFFF)
    return bytes(mutated)


def riff_chunks(data: bytes) -> list[RiffChunk]:
    """Every chunk of an AVI file; a list is reported by its list type ("hdrl", "movi")."""
    if data[:4] != b"RIFF":
        raise ValueError("not a RIFF file")
    chunks: list[RiffChunk] = []
    _walk_riff(data, 0, len(data), chunks)
    return chunks


def claim_avi_frame_count(data: bytes, frame_count: int) -> bytes:
    """An AVI whose headers (main and stream) declare `frame_count` frames, whatever it holds."""
    chunks = _by_id(riff_chunks(data))
    mutated = bytearray(data)
    struct.pack_into("<I", mutated, chunks["avih"].data_offset + 16, frame_count)  # dwTotalFrames
    struct.pack_into("<I", mutated, chunks["strh"].data_offset + 32, frame_count)  # dwLength
    return bytes(mutated)


def claim_avi_frame_size(data: bytes, width: int, height: int) -> bytes:
    """An MJPG AVI that declares `width` x `height` everywhere a decoder looks before decoding:
    the main header, the stream format and the start-of-frame marker of every JPEG frame."""
    chunks = riff_chunks(data)
    by_id = _by_id(chunks)
    mutated = bytearray(data)
    struct.pack_into("<II", mutated, by_id["avih"].data_offset + 32, width, height)  # dwWidth, dwHeight
    struct.pack_into("<ii", mutated, by_id["strf"].data_offset + 4, width, height)  # biWidth, biHeight
    for chunk in chunks:
        if chunk.chunk_id.endswith("dc"):
            sof = _jpeg_sof_offset(data, chunk.data_offset, chunk.data_offset + chunk.size)
            if sof is not None:
                struct.pack_into(">HH", mutated, sof + 5, height & 0xFFFF, width & 0xFFFF)
    return bytes(mutated)


def _walk_boxes(data: bytes, start: int, end: int, depth: int, boxes: list[Box]) -> None:
    offset = start
    while offset + 8 <= end:
        size, raw_kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1 and offset + 16 <= end:
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return  # a lie or a truncation: stop where the structure stops making sense
        kind = raw_kind.decode("latin-1")
        boxes.append(Box(offset, size, kind, depth))
        if kind in _MP4_CONTAINERS:
            _walk_boxes(data, offset + header, offset + size, depth + 1, boxes)
        elif kind in _MP4_HEADER_THEN_BOXES:
            _walk_boxes(data, offset + header + _MP4_HEADER_THEN_BOXES[kind], offset + size, depth + 1, boxes)
        offset += size


def _walk_riff(data: bytes, start: int, end: int, chunks: list[RiffChunk]) -> None:
    offset = start
    while offset + 8 <= end:
        raw_id, size = struct.unpack_from("<4sI", data, offset)
        if raw_id in _RIFF_LISTS and offset + 12 <= end:
            list_type = data[offset + 8 : offset + 12]
            chunks.append(RiffChunk(offset, list_type.decode("latin-1"), size))
            _walk_riff(data, offset + 12, min(end, offset + 8 + size), chunks)
        else:
            chunks.append(RiffChunk(offset, raw_id.decode("latin-1"), size))
        offset += 8 + size + (size & 1)


def _by_id(chunks: list[RiffChunk]) -> dict[str, RiffChunk]:
    found: dict[str, RiffChunk] = {}
    for chunk in chunks:
        found.setdefault(chunk.chunk_id, chunk)
    missing = {"avih", "strh", "strf"} - set(found)
    if missing:
        raise ValueError(f"not an AVI with a video stream: no {', '.join(sorted(missing))} chunk")
    return found


def _jpeg_sof_offset(data: bytes, start: int, end: int) -> int | None:
    """Where the start-of-frame marker of the JPEG in data[start:end] begins, walking its markers."""
    if data[start : start + 2] != b"\xff\xd8":
        return None
    offset = start + 2
    while offset + 4 <= end and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in _JPEG_SOF_MARKERS:
            return offset
        if marker == 0xDA:  # start of scan: the entropy-coded data follows, no SOF before it
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        offset += 2 + length
    return None
