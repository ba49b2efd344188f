"""What an upload OpenCV could not open looks like, for the error that tells the caller.

"Not a video OpenCV can decode" is as true of an MP3, a PDF, a Git LFS pointer or an HTML
error page saved under a `.mp4` name as of a damaged MP4, and each is fixed differently.
Only the first bytes are read: `filetype` knows the magic numbers of the common audio,
image, document and archive formats, and bytes it does not know are called text when they
decode as printable UTF-8. Anything else gets no guess, rather than a wrong one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import filetype

from videodag_service.media.mp4_boxes import boxes

# filetype looks at no more than the first 8 KiB; text is judged on a shorter start.
_HEAD_BYTES = 8192
_TEXT_SAMPLE_BYTES = 512
_QUOTED_TEXT_CHARS = 40
_MAX_TOP_LEVEL_BOXES = 100_000  # a fragmented MP4 has two a fragment


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
    if top_level == "video" and head[4:8] == b"ftyp" and _lacks_index(path):
        reason = (f"it is {name} with no index (moov box): cut short, as an upload or a recording that stopped"
                  " before its end (the index is written last unless the file was made with +faststart)")
    elif top_level == "video":
        reason = f"it is {name}, a video container, but audio only, in a codec OpenCV lacks, incomplete or damaged"
    elif top_level == "audio":
        reason = f"it is {name} audio ({kind.mime}), with no video stream"
    elif top_level == "image":
        reason = f"it is {name} image data ({kind.mime}) OpenCV cannot decode"
    else:
        reason = f"it is {name} data ({kind.mime})"
    return ContentGuess(kind.mime, reason)


def _lacks_index(path: str | os.PathLike[str]) -> bool:
    """Whether an ISO media file's top-level boxes, as far as they are whole, hold no `moov`."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            return all(kind != b"moov" for kind, _, _ in boxes(file, 0, size, _MAX_TOP_LEVEL_BOXES))
    except OSError:
        return False


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
