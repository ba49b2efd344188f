"""Where `videodag run` and `watch` write their per-frame results: JSON Lines, one object per frame."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from videodag_client import FrameResult
from videodag_client.cli._arguments import UsageError

STDOUT = "-"
STDIN = "-"


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


@dataclass(frozen=True)
class OutputTarget:
    """Where a results file goes: written in place, or as `part` renamed over `final` at the end."""

    final: str
    part: str | None
    """None for a FIFO, a terminal or another device: written directly, never replaced."""


def plan_output(path: str, *, input_path: str | None = None) -> OutputTarget:
    """Checks an `-o FILE` before the run starts, and decides how it is written.

    A regular file (or a new one) is written as `FILE.part` and renamed over FILE when the
    run succeeds; a symbolic link is followed, so the file it points to is replaced and the
    link stays. Anything else that exists (a FIFO, /dev/stdout, a terminal) is written
    directly: replacing it would swap the device for a regular file. A directory, a missing
    directory, or the input video itself is a `UsageError`: found after the run, the results
    would be lost; found by the rename, the input would be overwritten.
    """
    final = os.path.realpath(path)
    try:
        status: os.stat_result | None = os.stat(final)
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise UsageError(f"cannot write results to {path}: {error.strerror or error}") from None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise UsageError(f"cannot write results to {path}: it is a directory; name a file in it")
    parent = os.path.dirname(final)
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write results to {path}: the directory {parent} does not exist")
    _refuse_the_input(path, final, input_path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        return OutputTarget(final, None)
    part = f"{final}.part"
    _refuse_the_input(path, part, input_path)
    return OutputTarget(final, part)


def _refuse_the_input(path: str, candidate: str, input_path: str | None) -> None:
    if input_path is None or not os.path.exists(candidate):
        return
    input_status = _stat_or_none(sys.stdin.fileno() if input_path == STDIN else input_path)
    if input_status is not None and os.path.samestat(input_status, os.stat(candidate)):
        raise UsageError(f"cannot write results to {path}: {candidate} is the input video")


def _stat_or_none(path_or_descriptor: str | int) -> os.stat_result | None:
    try:
        return os.stat(path_or_descriptor)
    except OSError:
        return None  # the upload reports an input it cannot open


class JsonLinesOutput:
    """Writes frame records to a file, to stdout ("-"), or nowhere (None).

    A regular file is written as `<path>.part` and renamed when the run succeeds, so a file
    at `path` is always a complete run. A failed run keeps the `.part` file if it holds any
    frames: results up to the failing frame are still worth having. With `resume_after`
    (`watch --after N`), an existing `.part` is continued: its frames up to N are kept and
    the new ones appended, so an interrupted watch resumed with the same `-o` loses nothing.
    Devices and FIFOs (see `plan_output`) are written directly.
    """

    def __init__(
        self, path: str | None, *, input_path: str | None = None, resume_after: int | None = None
    ) -> None:
        self.path = path
        self.frames_written = 0
        self.frames_kept = 0
        """Frames of an earlier `.part` continued with `resume_after`."""
        self._target = plan_output(path, input_path=input_path) if path not in (None, STDOUT) else None
        self._resume_after = resume_after
        self._stream: TextIO | None = None

    @property
    def part_path(self) -> str | None:
        return None if self._target is None else self._target.part

    def __enter__(self) -> JsonLinesOutput:
        if self.path == STDOUT:
            self._stream = sys.stdout
        elif self._target is not None and self._target.part is None:
            self._stream = open(self._target.final, "w", encoding="utf-8")
        elif self._target is not None and self._target.part is not None:
            self._stream = self._open_part(self._target.part)
        return self

    def _open_part(self, part: str) -> TextIO:
        if self._resume_after is None or not os.path.isfile(part):
            return open(part, "w", encoding="utf-8")
        kept = _frames_up_to(part, self._resume_after)
        stream = open(part, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        stream.writelines(kept)
        self.frames_kept = len(kept)
        print(
            f"continuing the partial results in {part}: kept {len(kept)} frames up to frame {self._resume_after}",
            file=sys.stderr,
        )
        return stream

    def write(self, frame: FrameResult) -> None:
        if self._stream is None:
            return
        self._stream.write(json.dumps(frame_record(frame), ensure_ascii=False, separators=(",", ":")) + "\n")
        if self._stream is sys.stdout or (self._target is not None and self._target.part is None):
            self._stream.flush()  # a reader at the other end of a pipe sees each frame as it is done
        self.frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._target is None or self._stream is None:
            return
        self._stream.close()
        part = self._target.part
        if part is None:
            return
        frames = self.frames_kept + self.frames_written
        if exc_type is None:
            os.replace(part, self._target.final)
        elif frames:
            print(f"partial results ({frames} frames) kept in {part}", file=sys.stderr)
        else:
            os.remove(part)


def _frames_up_to(part: str, last_frame_index: int) -> list[str]:
    """The lines of an earlier `.part` with a frame index up to `last_frame_index`.

    A line cut short (the process was killed mid-write) or otherwise unreadable is dropped:
    the watch sends its frame again if it comes after `last_frame_index`.
    """
    kept: list[str] = []
    with open(part, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                index = json.loads(line)["frame_index"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(index, int) and index <= last_frame_index and line.endswith("\n"):
                kept.append(line)
    return kept
