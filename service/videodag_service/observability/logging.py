"""Structured JSON logs, each line carrying the id of the request it was written for.

The request id comes from the caller's `x-request-id` gRPC metadata when it is a sane token,
so one id follows a video from the calling service's logs into ours; otherwise a new one is
made. It lives in a context variable: code that logs needs no parameter for it. A context
variable is per thread, so work handed to another thread must be started with
`contextvars.copy_context().run(...)` to keep the id.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from videodag_service.observability.log_stream import UnblockingStreamHandler

REQUEST_ID_METADATA_KEY = "x-request-id"
# Anything else (spaces, quotes, newlines, very long values) could forge or break log lines.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("videodag_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "request_id"}


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's `x-request-id` if it is a sane token, else a new id."""
    for key, value in metadata or ():
        if key.lower() != REQUEST_ID_METADATA_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
        break
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request being served in this context; None outside any request."""
    return _request_id.get()


@contextmanager
def request_id_bound(request_id: str) -> Iterator[str]:
    """Makes `request_id` current for the block, then restores whatever was current before.

    The previous value is set back rather than the token reset: a streaming handler's
    generator may be finalised in a different context than the one it started in.
    """
    previous = _request_id.get()
    _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.set(previous)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id, in the thread that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if request_id is not None and getattr(record, "request_id", None) is None:
            record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, extras.

    `ascii_only` for a stream that does not write UTF-8 (stderr in a Latin-1 locale): a file
    name quoted in a message stays valid JSON there, escaped, instead of Python's `\\U0001f3ac`
    or a Latin-1 byte no JSON reader takes."""

    def __init__(self, *, ascii_only: bool = False) -> None:
        super().__init__()
        self._ascii_only = ascii_only

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=self._ascii_only)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def _text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT, defaults={"request_id": "-"})


def configure_logging(
    level: str = "INFO", *, json_lines: bool = True, stream: TextIO | None = None, forks: bool = False
) -> None:
    """Replace the root logger's handlers with one that writes JSON lines (or text) to stderr,
    without ever holding the caller when stderr is not read (`log_stream`). A process that
    `forks` (an RQ worker, for its work horses) writes with a plain handler, which holds it
    instead: the unblocking one's writer thread may be inside a write to stderr at the fork,
    and the child would hang on its first write of its own."""
    written_to = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(written_to) if forks else UnblockingStreamHandler(written_to)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter(ascii_only=not writes_utf8(written_to)) if json_lines else _text_formatter()
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_stray_output() -> None:
    """Send through the log what Python itself writes to stderr past it: warnings (a plugin's
    NumPy RuntimeWarning, a library's deprecation), the traceback of a thread that dies, of the
    main thread, and of an error raised where none can be (a `__del__`). Written raw, in several
    lines and without a level or request id, they broke `--log-format json`, which a log pipeline
    reads a line at a time. For a process's own entry point: a test runner keeps its hooks."""
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    sys.excepthook = _log_uncaught_exception
    sys.unraisablehook = _log_unraisable_exception


_stray_logger = logging.getLogger("videodag_service.uncaught")


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as Python's own hook: a thread's way to end
        return
    name = args.thread.name if args.thread is not None else "a thread"
    _stray_logger.error("uncaught exception in thread %s", name,
                        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))


def _log_uncaught_exception(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    _stray_logger.critical("uncaught exception", exc_info=(kind, error, trace))


def _log_unraisable_exception(args: Any) -> None:  # sys.UnraisableHookArgs, not importable
    what = args.err_msg or "Exception ignored in"
    error = args.exc_value or args.exc_type()
    _stray_logger.error("%s: %r", what, args.object, exc_info=(args.exc_type, error, args.exc_traceback))


def say_why_it_ends(program: str, reason: str, logger_name: str) -> None:
    """Write on stderr why `program` is ending (it cannot start, its store refused it): as the
    last line of its log, where the log is JSON lines, or else as `program: reason` for a person.
    Printed raw, it was the one line of a `--log-format json` process a log pipeline reading a
    line at a time could not take, and the line that says why the process is down."""
    if json_lines_configured():
        logging.getLogger(logger_name).critical("%s", reason)
    else:
        print(f"{program}: {reason}", file=sys.stderr)


def json_lines_configured() -> bool:
    """Whether the root logger writes JSON lines (`configure_logging`), so that what other
    processes write for the logs (decoder processes passing FFmpeg's messages on) can match."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


def json_line(message: str, *, logger: str, level: str = "WARNING", **extras: Any) -> str:
    """A log line in `JsonFormatter`'s shape, for text that does not come through `logging`."""
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    entry.update({key: value for key, value in extras.items() if value is not None})
    return json.dumps(entry, default=str, ensure_ascii=not writes_utf8(sys.stderr))


def writes_utf8(stream: TextIO | None) -> bool:
    """Whether text written to `stream` reaches it as UTF-8 (a stream without an encoding, a
    StringIO, keeps text as text)."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def text_line(message: str, *, logger: str, level: str = "WARNING", request_id: str | None = None) -> str:
    """A log line in `--log-format text`'s shape, for text that does not come through `logging`."""
    record = logging.LogRecord(logger, logging.getLevelNamesMapping()[level], "", 0, message, None, None)
    if request_id is not None:
        record.request_id = request_id
    return _text_formatter().format(record)
