"""What an upload OpenCV could not open looks like, for the error that tells the caller.

"Not a video OpenCV can decode" is as true of an MP3, a PDF, a Git LFS pointer or an HTML
error page saved under a `.mp4` name as of a damaged MP4, and each is fixed differently.
Only the first bytes are read: `filetype` knows the magic numbers of the common audio,
image, document and archive formats, and bytes it does not know are called text when they
decode as printable UTF-8. Anything else gets no guess, rather than a wrong one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import filetype

from videodag_service.media.mp4_boxes import HeaderBudget, TooManyBoxes, find_moov

# filetype looks at no more than the first 8 KiB; text is judged on a shorter start.
_HEAD_BYTES = 8192
_TEXT_SAMPLE_BYTES = 512
_QUOTED_TEXT_CHARS = 40


@dataclass(frozen=True)
class ContentGuess:
    """What the bytes look like: `detected_type` a MIME type, `reason` the words for the error
    ("it is MP3 audio (audio/mpeg), with no video stream"), and `logged_reason` the words for the
    server's log, which leaves out what the reason quotes of the upload."""

    detected_type: str
    reason: str
    logged_reason: str = ""

    def __post_init__(self) -> None:
        if not self.logged_reason:
            object.__setattr__(self, "logged_reason", self.reason)


def guess_content(path: str | os.PathLike[str]) -> ContentGuess | None:
    """A guess at what a file that is not a decodable video holds; None when its start says nothing."""
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD_BYTES)
    except OSError:
        return None
    if not head:
        return None
    kind = filetype.guess(head)
    if kind is None:
        return _text_guess(head)
    name = kind.extension.upper()
    top_level = kind.mime.partition("/")[0]
    tracks = _iso_tracks(path) if top_level == "video" and head[4:8] == b"ftyp" else None
    if tracks is _NO_INDEX:
        reason = (f"it is {name} with no index (moov box): cut short, as an upload or a recording that stopped"
                  " before its end (the index is written last unless the file was made with +faststart)")
    elif tracks and not any(handler == b"vide" for handler, _ in tracks):
        sound = any(handler == b"soun" for handler, _ in tracks)
        reason = f"it is {name} with no video track" + (", sound only" if sound else "")
    elif tracks and (codec := next(codec for handler, codec in tracks if handler == b"vide")):
        reason = (f"it is {name} whose video track is in {_printable(codec)!r}, a format this server's OpenCV "
                  "cannot decode, or incomplete or damaged")
    elif tracks:
        reason = f"it is {name} whose video track is damaged: it names no format"
    elif top_level == "video" and (size := _avi_frame_size(head)) is not None and _too_large_to_decode(*size):
        reason = (f"it is {name} whose video declares frames of {size[0]} x {size[1]} px, more than FFmpeg "
                  "decodes (it refuses frames of more than about 268 million pixels)")
    elif top_level == "video":
        reason = f"it is {name}, a video container, but audio only, in a codec OpenCV lacks, incomplete or damaged"
    elif top_level == "audio":
        reason = f"it is {name} audio ({kind.mime}), with no video stream"
    elif top_level == "image":
        reason = f"it is {name} image data ({kind.mime}) OpenCV cannot decode"
    else:
        reason = f"it is {name} data ({kind.mime})"
    return ContentGuess(kind.mime, reason)


_NO_INDEX: list[tuple[bytes, bytes]] = []  # compared by identity: the file has no `moov`


def _avi_frame_size(head: bytes) -> tuple[int, int] | None:
    """The frame size an AVI's video stream declares in its format (`strf`, a BITMAPINFOHEADER),
    which FFmpeg decodes by; the main header's (`avih`) it ignores."""
    if head[:4] != b"RIFF" or head[8:12] != b"AVI " or head[12:16] != b"LIST" or head[20:24] != b"hdrl":
        return None
    header_list_end = min(len(head), 20 + struct.unpack_from("<I", head, 16)[0])
    for kind, start, end in _riff_chunks(head, 24, header_list_end):
        if kind == b"LIST" and head[start:start + 4] == b"strl" and (size := _video_stream_size(head, start + 4, end)):
            return size
    return None


def _video_stream_size(head: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A stream list's frame size, if it is a video stream's (`strh` of type `vids`)."""
    is_video = False
    for kind, data, data_end in _riff_chunks(head, start, end):
        if kind == b"strh":
            is_video = head[data:data + 4] == b"vids"
        elif kind == b"strf" and is_video and data_end - data >= 12:
            width, height = struct.unpack_from("<ii", head, data + 4)  # biWidth, biHeight (negative: top-down)
            return abs(width), abs(height)
    return None


def _riff_chunks(head: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, data start, data end) of the chunks from `start` to `end`, as far as `head` holds them."""
    offset = start
    while offset + 8 <= end:
        size = struct.unpack_from("<I", head, offset + 4)[0]
        yield head[offset:offset + 4], offset + 8, min(end, offset + 8 + size)
        offset += 8 + size + (size & 1)


def _too_large_to_decode(width: int, height: int) -> bool:
    """FFmpeg's own check of a frame size (`av_image_check_size`), which refuses the stream."""
    return (width + 128) * (height + 128) >= (2**31 - 1) // 8


def _iso_tracks(path: str | os.PathLike[str]) -> list[tuple[bytes, bytes]] | None:
    """(handler, sample format) of each track of an ISO media file (`vide`, `avc1`; `soun`,
    `mp4a`), the format b"" where a track names none; `_NO_INDEX` when its top-level boxes, as
    far as they are whole, hold no `moov`; None when it cannot be read, or is not what a file
    whose tracks say something looks like: a track without its handler, or more boxes inside the
    `moov` than a real one holds (`HeaderBudget`: an upload made to keep the server reading)."""
    try:
        with open(path, "rb") as file:
            moov = find_moov(file)
            if moov is None:
                return _NO_INDEX
            budget = HeaderBudget()
            tracks = [_track(file, payload, end, budget) for kind, payload, end in budget.walk(file, *moov)
                      if kind == b"trak"]
    except (OSError, struct.error, TooManyBoxes):
        return None
    if any(track is None for track in tracks):
        return None
    return [track for track in tracks if track is not None]


def _track(file: BinaryIO, start: int, end: int, budget: HeaderBudget) -> tuple[bytes, bytes] | None:
    """(handler, sample format) of one `trak`; None without a handler (a damaged track)."""
    media = budget.first(file, b"mdia", start, end)
    if media is None:
        return None
    handler = information = None
    for kind, payload, box_end in budget.walk(file, *media):
        if kind == b"hdlr":
            handler = payload
        elif kind == b"minf":
            information = (payload, box_end)
    if handler is None:
        return None
    file.seek(handler + 8)  # version, flags, pre_defined
    handler_type = file.read(4)
    table = budget.first(file, b"stbl", *information) if information is not None else None
    descriptions = budget.first(file, b"stsd", *table) if table is not None else None
    sample_format = b""
    if descriptions is not None and descriptions[1] - descriptions[0] >= 16:
        file.seek(descriptions[0] + 12)  # version, flags, entry count, the first entry's size
        sample_format = file.read(4)
    return handler_type, sample_format


def _printable(code: bytes) -> str:
    """A four-character code as text (`png `), bytes that are not printable ASCII as `?`."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F else "?" for byte in code)


def _text_guess(head: bytes) -> ContentGuess | None:
    sample = head[:_TEXT_SAMPLE_BYTES]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 3:  # not just a character cut at the sample's end
            return None
        text = sample[: error.start].decode("utf-8")
    if not text.strip() or not all(char.isprintable() or char in "\t\n\r" for char in text):
        return None
    start = " ".join(text.split())[:_QUOTED_TEXT_CHARS]
    return ContentGuess("text/plain", f"it is text, starting {start!r}", "it is text (its start is told to the caller)")
