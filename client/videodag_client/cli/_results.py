"""Where `videodag run` writes its per-frame results: JSON Lines, one object per frame."""

from __future__ import annotations

import json
import os
import sys
from types import TracebackType
from typing import Any, TextIO

from videodag_client import FrameResult

STDOUT = "-"


def frame_record(frame: FrameResult) -> dict[str, Any]:
    """The JSON object written for one frame; `node_errors` only when a node failed."""
    record: dict[str, Any] = {
        "frame_index": frame.frame_index,
        "timestamp": frame.timestamp_seconds,
        "result": frame.result,
    }
    if frame.node_errors:
        record["node_errors"] = [
            {"node_id": e.node_id, "plugin": e.plugin, "code": e.code.name, "message": e.message}
            for e in frame.node_errors
        ]
    return record


class JsonLinesOutput:
    """Writes frame records to a file, to stdout ("-"), or nowhere (None).

    A file is written as `<path>.part` and renamed when the run succeeds, so a file at `path`
    is always a complete run. A failed run keeps the `.part` file if it holds any frames:
    results up to the failing frame are still worth having.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.frames_written = 0
        self._part_path = f"{path}.part" if path not in (None, STDOUT) else None
        self._stream: TextIO | None = None

    def __enter__(self) -> JsonLinesOutput:
        if self.path == STDOUT:
            self._stream = sys.stdout
        elif self._part_path is not None:
            self._stream = open(self._part_path, "w", encoding="utf-8")  # closed in __exit__
        return self

    def write(self, frame: FrameResult) -> None:
        if self._stream is None:
            return
        self._stream.write(json.dumps(frame_record(frame), ensure_ascii=False, separators=(",", ":")) + "\n")
        if self._stream is sys.stdout:
            self._stream.flush()  # a reader at the other end of a pipe sees each frame as it is done
        self.frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._part_path is None or self._stream is None or self.path is None:
            return
        self._stream.close()
        if exc_type is None:
            os.replace(self._part_path, self.path)
        elif self.frames_written:
            print(
                f"partial results ({self.frames_written} frames) kept in {self._part_path}", file=sys.stderr
            )
        else:
            os.remove(self._part_path)
