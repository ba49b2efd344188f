"""Root logging captured as JSON lines, as the server writes them, for tests that read the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from videodag_service.observability import configure_logging


@contextmanager
def json_log_lines(level: str) -> Iterator[io.StringIO]:
    """Root logging sent to a buffer as JSON lines at `level`; the previous handlers come back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
