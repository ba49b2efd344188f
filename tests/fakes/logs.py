"""Root logging captured as JSON lines, as the server writes them, for tests that read the log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from videodag_service.observability import configure_logging


@contextmanager
def logging_configured(level: str, stream: TextIO, *, json_lines: bool = True) -> Iterator[TextIO]:
    """Root logging as the server configures it, to `stream`; the previous handlers come back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(level, json_lines=json_lines, stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


@contextmanager
def json_log_lines(level: str) -> Iterator[io.StringIO]:
    """Root logging sent to a buffer as JSON lines at `level`; the previous handlers come back afterwards."""
    stream = io.StringIO()
    with logging_configured(level, stream):
        yield stream


def why_it_ended(stderr: str) -> str:
    """What the last line a server or worker wrote on stderr says of why it ended: the message of
    its JSON log line (the default log format), or the line itself (`--log-format text`)."""
    last = stderr.splitlines()[-1]
    if not last.startswith("{"):
        return last
    entry = json.loads(last)
    assert entry["level"] == "CRITICAL", entry
    message: str = entry["message"]
    return message
