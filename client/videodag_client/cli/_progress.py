"""Progress bars for a run: upload bytes first, then processed frames, on stderr."""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType

from tqdm import tqdm


def progress_wanted(quiet: bool, results_on_stdout: bool = False) -> bool:
    """Bars only for a person watching: never with --quiet or when stderr is a pipe or file, nor
    when the results themselves are printed on the terminal (`-o -`), where each redraw of a
    bar would land in the middle of a result's line, nor on a terminal that cannot redraw a line
    (`TERM=dumb`: Emacs' shell, some CI consoles), where each redraw would be one more line."""
    return (not quiet and sys.stderr.isatty() and not (results_on_stdout and sys.stdout.isatty())
            and os.environ.get("TERM") != "dumb")


# The size bars are drawn for on a terminal that reports none.
_FALLBACK_SIZE = {"ncols": 80, "nrows": 24}


def bar_size() -> dict[str, int]:
    """tqdm's `ncols` and `nrows` for a terminal that reports a size of 0x0 (some `docker exec -t`
    and `script` sessions, or a width without a height), where it draws no bar at all: what
    it reports, else `COLUMNS` and `LINES` where the user set them, as shells and
    `shutil.get_terminal_size` take them, else 80x24. None, for tqdm to ask, otherwise."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # not a terminal, or no descriptor (a test's stream)
        return {}
    if size.columns and size.lines:
        return {}
    return {key: reported or _positive(os.environ.get(variable), _FALLBACK_SIZE[key])
            for key, variable, reported in (("ncols", "COLUMNS", size.columns), ("nrows", "LINES", size.lines))}


def _positive(text: str | None, fallback: int) -> int:
    try:
        number = int(text or "")
    except ValueError:
        return fallback
    return number if number > 0 else fallback


class RunProgress:
    """Two bars: the upload's, then the frames'. `upload` is called from gRPC's request thread.

    With decoding during the upload, frames start before the upload ends: the frames bar then
    shows under the upload bar until `upload_finished`.
    """

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        self._upload_bar: tqdm | None = None
        self._upload_done = False
        self._frames_bar: tqdm | None = None

    def upload(self, bytes_sent: int, total_bytes: int | None) -> None:
        with self._lock:
            if self._upload_done:
                return
            if self._upload_bar is None:
                self._upload_bar = self._bar(
                    total_bytes, "upload", unit="B", unit_scale=True, unit_divisor=1024
                )
            self._upload_bar.update(bytes_sent - self._upload_bar.n)

    def upload_finished(self) -> None:
        with self._lock:
            self._upload_done = True
            if self._upload_bar is not None:
                self._upload_bar.close()

    def start_frames(self, expected_frames: int | None) -> None:
        with self._lock:
            below_upload = self._upload_bar is not None and not self._upload_done
        self._frames_bar = self._bar(expected_frames, "frames", unit="frame", position=1 if below_upload else 0)

    def frame_done(self) -> None:
        if self._frames_bar is not None:
            self._frames_bar.update(1)

    def close(self) -> None:
        self.upload_finished()
        if self._frames_bar is not None:
            self._frames_bar.close()

    def _bar(self, total: int | None, description: str, **unit_options: object) -> tqdm:
        return tqdm(
            total=total, desc=description, file=sys.stderr, disable=not self._enabled, leave=False,
            **bar_size(), **unit_options,
        )

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
