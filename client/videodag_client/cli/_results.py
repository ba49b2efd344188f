"""Where `videodag run` and `watch` write their per-frame results (JSON Lines, one object per
frame), and how any command's output that cannot be written is reported."""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from videodag_client import FrameResult
from videodag_client._file_names import beside
from videodag_client.cli._arguments import UsageError
from videodag_client.cli._json import json_text
from videodag_client.cli._part_lock import NO_FOLLOW, open_locked
from videodag_client.cli._terminal import json_terminal_safe
from videodag_client.cli._video_input import STDIN

STDOUT = "-"
# A path that is one of a process's descriptors (what /dev/stdout and /dev/fd/N lead to).
_DESCRIPTOR_PATH = re.compile(r"/dev/fd/\d+|/proc/[^/]+/fd/\d+")


def is_stdout(path: str | None) -> bool:
    """Whether results written to `path` land on this process's stdout: `-`, or a path that
    leads there (`/dev/stdout`, or the very file stdout is redirected to). A summary printed
    to stdout then would end up inside the JSON Lines."""
    if path == STDOUT:
        return True
    if path is None or sys.stdout is None:  # descriptor 1 closed
        return False
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file yet, or a stdout with no descriptor
        return False


class OutputNotWritten(Exception):
    """Results or a command's output could not be written (a full disk, /dev/full): exit 1, as
    `--help` says, not the usage error an `OSError` from a file named on the command line is."""


def print_output(text: str) -> None:
    """Prints what a command is for (a listing, a job, a summary) to stdout, flushed: a write that
    fails fails here, as an `OutputNotWritten`, not in the flush at exit (exit code 120)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise  # the reader went: exit 141, as for SIGPIPE
    except OSError as error:
        raise OutputNotWritten(f"cannot write to standard output: {error.strerror or error}") from None


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


def frame_line(frame: FrameResult, *, ascii_only: bool = False) -> str:
    """The JSON Lines line written for one frame. Non-ASCII letters stay readable (a label in
    Greek is not `\\u03b1...`), but no character of a server's strings can drive a terminal the
    line is printed to (`-o -`, a file `cat` later), nor reorder or hide what it shows.
    `ascii_only` for a stream that does not write UTF-8 (stdout in a Latin-1 locale): JSON's
    escapes keep the line valid, and the same text, in any encoding."""
    text = json_text(frame_record(frame), ensure_ascii=ascii_only, separators=(",", ":"))
    return (text if ascii_only else json_terminal_safe(text)) + "\n"


def _writes_utf8(stream: TextIO) -> bool:
    try:
        return codecs.lookup(stream.encoding or "ascii").name == "utf-8"
    except LookupError:
        return False


@dataclass(frozen=True)
class OutputTarget:
    """Where a results file goes: written in place, or as `part` renamed over `final` at the end."""

    final: str
    part: str | None
    """None for a FIFO, a terminal or another device: written directly, never replaced."""


# `new/`, and on Windows `new\\` too.
_SEPARATORS = tuple(separator for separator in (os.sep, os.altsep) if separator)


def plan_output(path: str, *, input_path: str | None = None) -> OutputTarget:
    """Checks an `-o FILE` before the run starts, and decides how it is written.

    A regular file (or a new one) is written as `FILE.part` and renamed over FILE when the
    run succeeds; a symbolic link is followed, so the file it points to is replaced and the
    link stays. Anything else that exists (a FIFO, /dev/stdout, a terminal) is written
    directly: replacing it would swap the device for a regular file. A directory, a missing
    directory (`new/` too), a descriptor that is not open, or the input video itself is a
    `UsageError`: found after the run, the results would be lost; found by the rename, the
    input would be overwritten.
    """
    try:
        status: os.stat_result | None = os.stat(path)  # through links, /dev/stdout's to a pipe included
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise UsageError(f"cannot write results to {path}: {error.strerror or error}") from None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise UsageError(f"cannot write results to {path}: it is a directory; name a file in it")
    if status is None and path.endswith(_SEPARATORS):  # realpath would drop the slash and make a file of it
        raise UsageError(f"cannot write results to {path}: no such directory; name a file")
    if status is None and _through_a_descriptor(path):
        raise UsageError(f"cannot write results to {path}: no such descriptor is open")
    if status is not None and (not stat.S_ISREG(status.st_mode) or _through_a_descriptor(path)):
        # A device or FIFO, or a file some process already has open (/dev/stdout redirected by
        # the shell): written in place, by the name given, never replaced.
        _refuse_the_input(path, path, input_path)
        return OutputTarget(path, None)
    final = os.path.realpath(path)
    parent = os.path.dirname(final)
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write results to {path}: the directory {parent} does not exist")
    _refuse_the_input(path, final, input_path)
    part = beside(final, "", ".part")
    _refuse_the_input(path, part, input_path)
    return OutputTarget(final, part)


def _through_a_descriptor(path: str) -> bool:
    """Whether `path` names an open descriptor (/dev/stdout, /dev/fd/N, /proc/PID/fd/N), through links."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if _DESCRIPTOR_PATH.fullmatch(current):
            return True
        if not os.path.islink(current):
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return False


def _refuse_the_input(path: str, candidate: str, input_path: str | None) -> None:
    if input_path is None or not os.path.exists(candidate):
        return
    if input_path == STDIN:
        if sys.stdin is None:  # closed (`<&-`): nothing to overwrite
            return
        input_status = _stat_or_none(sys.stdin.fileno())
    else:
        input_status = _stat_or_none(input_path)
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
        if path == "":
            raise UsageError("cannot write results to an empty path; name a file, or '-' for stdout")
        self.path = path
        self.frames_written = 0
        self.frames_kept = 0
        """Frames of an earlier `.part` continued with `resume_after`."""
        self._target = plan_output(path, input_path=input_path) if path not in (None, STDOUT) else None
        self.lands_on_stdout = is_stdout(path) or (self.part_path is not None and is_stdout(self.part_path))
        """Judged before the run: a file stdout is redirected to (`-o FILE > FILE`) is replaced by
        the new one when the run succeeds, and stdout then leads to neither; one written as
        `FILE.part` (`> FILE.part`) would have the summary written over its first frames."""
        self._resume_after = resume_after
        self.frame_stride: int | None = None
        """The job's stride, where known before the `.part` is continued: a gap is then refused
        before the `.part` is touched, and before anything is said of continuing it."""
        self._last_kept: int | None = None
        self._gap_unchecked = False
        """Whether a continued `.part` still awaits `check_for_a_gap`."""
        self._last_frame_index: int | None = None
        self._stream: TextIO | None = None
        self._lock_descriptor: int | None = None
        self._write_failed = False

    @property
    def part_path(self) -> str | None:
        return None if self._target is None else self._target.part

    def __enter__(self) -> JsonLinesOutput:
        if self.path == STDOUT:
            self._stream = sys.stdout
        elif self._target is not None and self._target.part is None:
            self._stream = _own_stream_writing_to(self._target.final) or open(
                self._target.final, "a", encoding="utf-8"  # appended: no truncation of what others wrote
            )
        elif self._target is not None and self._target.part is not None:
            self._stream = self._open_part(self._target.part)
        return self

    def _open_part(self, part: str) -> TextIO:
        """The `.part`, locked for this command alone (on a descriptor of its own, held until
        the `.part` is renamed, kept or removed) before anything in it is touched."""
        resuming = self._resume_after is not None and os.path.isfile(part)
        self._lock_descriptor = open_locked(part, str(self.path))
        try:
            return self._continue_part(part) if resuming else _open_new(part)
        except BaseException:
            self._release_lock()
            raise

    def _continue_part(self, part: str) -> TextIO:
        assert self._resume_after is not None
        kept = _frames_up_to(part, self._resume_after)
        # The kept frames go to a file of their own first, then take the .part's place: cut
        # short meanwhile (a signal), the .part still holds them, and the server sends them
        # no more. That file is locked before it takes the .part's name: the lock moves with it.
        # It is closed before the rename and the .part opened again after it, since Windows
        # renames no file that is open; the lock (where there is one) holds meanwhile.
        last_kept = json.loads(kept[-1])["frame_index"] if kept else None
        if self.frame_stride is not None:
            self._check_gap(part, last_kept, self.frame_stride)
        resuming = beside(part, "", ".resuming")
        moved_lock: int | None = None
        replaced = False
        try:
            moved_lock = open_locked(resuming, str(self.path))
            with _open_new(resuming) as written:
                written.writelines(kept)
            os.replace(resuming, part)
            replaced = True
            stream = _open_appending(part)
        except BaseException as error:
            if moved_lock is not None:
                os.close(moved_lock)
            if not replaced:
                with suppress(OSError):
                    os.remove(resuming)
            if isinstance(error, OSError):  # a full disk; on Windows, the .part open in another program
                now = (f"it holds the {len(kept)} frames up to frame {self._resume_after}" if replaced
                       else "it is kept as it was")
                raise OutputNotWritten(f"cannot continue the partial results in {part}: "
                                       f"{error.strerror or error}; {now}") from None
            raise
        self._release_lock()
        self._lock_descriptor = moved_lock
        self.frames_kept = len(kept)
        self._last_kept = last_kept
        self._gap_unchecked = self.frame_stride is None
        print(f"continuing the partial results in {part}: kept {len(kept)} frames"
              + ("" if self._last_kept is None else f", the last frame {self._last_kept}"), file=sys.stderr)
        return stream

    def check_for_a_gap(self, frame_stride: int) -> None:
        """Once the job's stride is known, see whether a continued `.part` would miss frames: the
        watch sends only frames after `resume_after`, and the `.part` may end before it. Frames
        the stride skips are no gap: the next frame after the last kept one is `frame_stride` later.

        A `.part` that ends before `resume_after` is refused, before any frame is written: the
        results file would have a hole that no later command can fill, since the `.part` becomes
        it. One that holds no frame up to `resume_after` may be another command's (a run's), or a
        watch's that started later: only warned of."""
        if not self._gap_unchecked:
            return
        self._gap_unchecked = False
        self._check_gap(self.part_path, self._last_kept, frame_stride)

    def _check_gap(self, part: str | None, last_kept: int | None, frame_stride: int) -> None:
        if self._resume_after is None or self._resume_after < 0:
            return
        if last_kept is None:
            print(f"warning: {part} holds no frame up to {self._resume_after}: any the job processed up to it are "
                  "not in it; resume with --after -1 to have them all", file=sys.stderr)
        elif self._resume_after >= last_kept + max(1, frame_stride):
            raise UsageError(f"{part} ends at frame {last_kept}, not {self._resume_after}: continued after "
                             f"frame {self._resume_after}, {self.path} would miss the frames in between; resume with "
                             f"--after {last_kept} (the .part is kept as it is)")

    def write(self, frame: FrameResult) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(frame_line(frame, ascii_only=not _writes_utf8(self._stream)))
            if self._stream is sys.stdout or (self._target is not None and self._target.part is None):
                self._stream.flush()  # a reader at the other end of a pipe sees each frame as it is done
        except BrokenPipeError:
            raise  # the reader went: exit 141, as for SIGPIPE
        except OSError as error:
            raise self._not_written(error) from None
        self._last_frame_index = frame.frame_index
        self.frames_written += 1

    def _not_written(self, error: OSError) -> OutputNotWritten:
        self._write_failed = True
        where = "standard output" if self._stream is sys.stdout else self.path
        return OutputNotWritten(f"cannot write results to {where}: {error.strerror or error}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._target is None or self._stream is None:
            return
        # Closing writes what is still buffered, which fails on a full disk: the run fails with
        # it, unless it is failing already (that error says more; it may be this one, from `write`).
        not_written = self._finish_writing(self._stream)
        self._keep_or_replace_part(self._target, failed=exc_type is not None or not_written is not None)
        if not_written is not None and exc_type is None:
            raise not_written

    def _finish_writing(self, stream: TextIO) -> OutputNotWritten | None:
        try:
            if stream in (sys.stdout, sys.stderr):
                stream.flush()  # ours to keep writing the summary to
            else:
                stream.close()
        except BrokenPipeError:
            raise
        except OSError as error:
            return self._not_written(error)
        return None

    def _keep_or_replace_part(self, target: OutputTarget, *, failed: bool) -> None:
        """The `.part` becomes the results file, or is kept with what it holds, or removed if it holds nothing."""
        part = target.part
        if part is None:
            return
        try:
            frames = self.frames_kept + self.frames_written
            if not failed:
                self._replace(part, target.final)
            elif frames:
                last = self._last_frame_index if self._last_frame_index is not None else self._last_kept
                # Not every frame written may have reached a disk that filled up: what did stays.
                count = f"at most {frames}" if self._write_failed else f"{frames}"
                print(f"partial results ({count} frames, up to frame {last}) kept in {part}", file=sys.stderr)
            else:
                with suppress(OSError):  # an empty file left behind says less than the error under way
                    os.remove(part)
        finally:
            self._release_lock()

    def _replace(self, part: str, final: str) -> None:
        """The `.part` renamed over the results file; where that fails (on Windows, a results
        file another program has open; a folder made there meanwhile) the `.part` keeps them."""
        try:
            os.replace(part, final)
        except OSError as error:
            self._write_failed = True
            raise OutputNotWritten(f"cannot write results to {self.path}: {error.strerror or error}; all "
                                   f"{self.frames_kept + self.frames_written} frames are kept in {part}") from None

    def _release_lock(self) -> None:
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None


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


def _own_stream_writing_to(path: str) -> TextIO | None:
    """sys.stdout or sys.stderr when `path` is the very file it writes to (`-o /dev/stdout > f`).

    Written through a second descriptor, the results would start at its own offset, and the
    summary printed to stdout afterwards would overwrite them from the file's start.
    """
    try:
        target = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and os.path.samestat(target, os.fstat(stream.fileno())):
                stream.flush()
                return stream
        except (OSError, ValueError):  # closed, or not a real descriptor (a test's capture)
            continue
    return None


def _open_new(path: str) -> TextIO:
    """A results file of our own naming, created or emptied, never through a link planted there."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NO_FOLLOW, 0o666)
    return os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")  # the same bytes on Windows


def _open_appending(path: str) -> TextIO:
    """A results file of our own naming, written on at its end, never through a link planted there."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | NO_FOLLOW)
    return os.fdopen(descriptor, "a", encoding="utf-8", newline="\n")
