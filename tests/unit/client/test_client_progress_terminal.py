"""Progress bars on real terminals (a pseudo-terminal of a given size), as a person sees them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

SHOW_FRAMES = """
from videodag_client.cli._progress import RunProgress
with RunProgress(enabled=True) as progress:
    progress.start_frames(5)
    for _ in range(5):
        progress.frame_done()
"""


def _shown_on_a_terminal(rows: int, columns: int, code: str, term: str = "xterm", **environment: str) -> str:
    """What `code` run in a child whose stderr is a terminal of `rows` x `columns` shows on it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    inherited = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=follower,
                             env={**inherited, "TERM": term, **environment})
    os.close(follower)
    shown = b""
    try:
        while select.select([leader], [], [], 20)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        child.wait(20)
        os.close(leader)
    return shown.decode(errors="replace")


@pytest.mark.parametrize(("rows", "columns"), [(0, 0), (24, 100)], ids=["no-size", "100-columns"])
def test_the_frames_bar_is_drawn_whatever_size_the_terminal_reports(rows: int, columns: int) -> None:
    """Some `docker exec -t` and `script` sessions report 0x0: tqdm then drew no bar at all."""
    shown = _shown_on_a_terminal(rows, columns, SHOW_FRAMES)
    assert "frames:" in shown and "/5 [" in shown


@pytest.mark.parametrize(("reported", "columns", "widest"), [(0, "50", 50), (0, "", 80), (0, "0", 80), (120, "", 120)])
def test_a_terminal_of_no_size_draws_its_bars_as_wide_as_columns_says(reported: int, columns: str,
                                                                       widest: int) -> None:
    lines = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", _shown_on_a_terminal(
        0, reported, SHOW_FRAMES, COLUMNS=columns)))
    drawn = [line for line in lines if "frames:" in line]
    assert drawn and max(len(line) for line in drawn) == widest


WANTED = """
from videodag_client.cli._progress import progress_wanted
print("wanted" if progress_wanted(quiet=False) else "not wanted")
"""


@pytest.mark.parametrize(("term", "wanted"), [("xterm-256color", True), ("dumb", False)])
def test_no_bars_on_a_terminal_that_cannot_redraw_a_line(term: str, wanted: bool) -> None:
    """Emacs' shell and some CI consoles say TERM=dumb: each redraw of a bar was one more line there."""
    shown = _shown_on_a_terminal(24, 100, WANTED, term=term)
    assert ("not wanted" not in shown) is wanted and "wanted" in shown
