"""Reading the results to draw: the JSON Lines `videodag run -o` writes.

One `{"frame_index", "result", ...}` per line; event-wrapped `{"frame": {...}}` lines as the
Node example prints are read too. Apart from the renderer: reading them needs neither OpenCV
nor the video, and a bad line is reported before any frame is decoded.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from videodag_client._render_error import RenderError


def load_results(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Frame index -> result, from a JSON Lines file; blank lines and non-frame events are skipped.
    A byte order mark at the start (an editor's on Windows) is not part of the JSON, and one of
    UTF-16 says the file is in it: Windows PowerShell's `>` (5.1, the one Windows comes with)
    writes the results of `videodag run -o -` so."""
    results: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as file, _as_text(file) as lines:
        for number, line in enumerate(_lines_of_text(lines, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RenderError(f"{path}:{number}: not JSON: {error.msg}") from None
            if isinstance(record, dict) and isinstance(record.get("frame"), dict):
                record = record["frame"]
            elif isinstance(record, dict) and "event" in record:
                continue  # upload_received, video_info, summary
            index = record.get("frame_index") if isinstance(record, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                raise RenderError(f"{path}:{number}: expected an object with an integer frame_index")
            result = record.get("result", {})
            if not isinstance(result, dict):
                raise RenderError(f"{path}:{number}: result must be an object")
            results[record["frame_index"]] = result
    return results


def _as_text(file: io.BufferedReader) -> io.TextIOWrapper:
    """The file's text: UTF-16 where it starts with that byte order mark, else UTF-8 (its own
    mark skipped). The mark is read through the same handle, without a second open, and given
    back to the text: the results may come through a pipe (`<(...)`, /dev/stdin), whose bytes
    are read once, and whose first read may hold one byte only."""
    start = file.read(2)
    encoding = "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    return io.TextIOWrapper(io.BufferedReader(_ReadAgain(start, file)), encoding=encoding)


class _ReadAgain(io.RawIOBase):
    """The bytes read already (`start`), then the rest of `file`, which stays the caller's to close."""

    def __init__(self, start: bytes, file: io.BufferedReader) -> None:
        super().__init__()
        self._start = start
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._start:
            count = min(len(view), len(self._start))
            view[:count] = self._start[:count]
            self._start = self._start[count:]
            return count
        data = self._file.read1(len(view))
        view[:len(data)] = data
        return len(data)


def _lines_of_text(lines: Iterable[str], path: str | os.PathLike[str]) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError:
        raise RenderError(f"{path}: not UTF-8 text, as JSON Lines are (if it is the video: the video comes first, "
                          "then the results)") from None
