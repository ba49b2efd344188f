"""Whether a video is a fragmented MP4, read from the boxes at its start.

A fragmented MP4 (ISO BMFF) begins with `ftyp` and a `moov` that holds an `mvex` box
("movie extends": samples follow in `moof` fragments); an unfragmented one keeps its
samples' index in `moov` and its media in one `mdat`. Opening a fragmented MP4 from a
seekable source, FFmpeg walks every fragment header first, so an upload still arriving
would open only at its end; `capture` tells it to leave them for later where it can.

Only box headers are read, each read bounded, and anything that is not a well-formed MP4
start is simply "not fragmented": the file is hostile until FFmpeg has opened it.
"""

from __future__ import annotations

from videodag_service.media.mp4_boxes import SeekableStream, boxes

# Boxes that may come before `moov` at the top level (ftyp, free, skip, wide, uuid, ...) and
# boxes inside `moov` (mvhd, one trak per track, udta, mvex, ...): a real file has a handful.
_MAX_TOP_LEVEL_BOXES = 16
_MAX_MOOV_CHILDREN = 4096


def is_fragmented_mp4(stream: SeekableStream) -> bool:
    """Whether `stream` holds a fragmented MP4, judged from its start; the stream is left at its start.

    Reads wait as the stream's reads do (an upload still arriving waits for its bytes). For an
    MP4 only the box headers up to the end of `moov` are read; for anything else, 8 bytes.
    """
    try:
        return _has_movie_extends(stream)
    finally:
        stream.seek(0)


def _has_movie_extends(stream: SeekableStream) -> bool:
    for index, (kind, payload_start, end) in enumerate(boxes(stream, 0, None, _MAX_TOP_LEVEL_BOXES)):
        if index == 0 and kind != b"ftyp":
            return False  # not an ISO BMFF file at all
        if kind == b"moov":
            return any(child == b"mvex" for child, _, _ in boxes(stream, payload_start, end, _MAX_MOOV_CHILDREN))
        if kind in (b"mdat", b"moof"):
            return False  # media before the movie box: its index is at the end
    return False
