"""The VIDEO argument of `run` and `submit`: a path, or '-' for stdin."""

from __future__ import annotations

import sys
from typing import BinaryIO

from videodag_client.cli._arguments import UsageError

STDIN = "-"


def video_source(video: str) -> str | BinaryIO:
    """The path, or for '-' stdin as a binary stream (a pipe works: the upload never seeks one)."""
    if video != STDIN:
        return video
    if sys.stdin is None:
        raise UsageError("VIDEO is '-' but stdin is closed: pipe or redirect the video into it")
    if sys.stdin.isatty():
        raise UsageError("VIDEO is '-' but stdin is a terminal: pipe or redirect the video into it")
    return open(sys.stdin.fileno(), "rb", closefd=False)
