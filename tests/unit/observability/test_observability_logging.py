"""JSON log lines with the request id of the context that logged them."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from fakes.logs import json_log_lines, logging_configured
from videodag_service.observability import (
    current_request_id,
    request_id_bound,
    request_id_from_metadata,
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Root logging sent to a buffer as JSON lines; the previous handlers come back afterwards."""
    with json_log_lines("DEBUG") as stream:
        yield stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_bound_request_id(log_stream: io.StringIO) -> None:
    log = logging.getLogger("videodag_service.test")
    log.info("before any request")
    with request_id_bound("req-42"):
        log.warning("stored %d bytes", 1024, extra={"pipeline_id": "frame_stats_v1"})
    log.error("after the request")

    first, second, third = lines(log_stream)
    assert "request_id" not in first
    assert second["request_id"] == "req-42"
    assert second["message"] == "stored 1024 bytes"
    assert second["level"] == "WARNING"
    assert second["logger"] == "videodag_service.test"
    assert second["pipeline_id"] == "frame_stats_v1"
    assert str(second["time"]).endswith("+00:00")
    assert "request_id" not in third


def test_exceptions_are_kept_inside_the_json_line(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("bad frame\nsecond line")
    except ValueError:
        logging.getLogger("x").exception("plugin failed")
    (entry,) = lines(log_stream)
    assert entry["message"] == "plugin failed"
    assert "ValueError: bad frame" in str(entry["exception"])


def test_request_ids_do_not_leak_between_threads(log_stream: io.StringIO) -> None:
    seen: dict[str, str | None] = {}
    release = threading.Event()

    def serve(name: str) -> None:
        with request_id_bound(f"id-{name}"):
            release.wait(5)
            logging.getLogger("worker").info(name)
            seen[name] = current_request_id()

    threads = [threading.Thread(target=serve, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()

    assert seen == {"a": "id-a", "b": "id-b"}
    assert {(entry["message"], entry["request_id"]) for entry in lines(log_stream)} == {("a", "id-a"), ("b", "id-b")}
    assert current_request_id() is None


def test_a_copied_context_carries_the_id_into_a_worker_thread() -> None:
    seen: list[str | None] = []
    with request_id_bound("req-7"):
        context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(lambda: seen.append(current_request_id()),))
    worker.start()
    worker.join()
    assert seen == ["req-7"]


def test_nested_binding_restores_the_outer_id() -> None:
    with request_id_bound("outer"):
        with request_id_bound("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
    assert current_request_id() is None


@pytest.mark.parametrize(
    "value",
    [
        "abc-123",
        "0f8e1c2a9b",
        "trace:span/1.2_x",
        b"bytes-id",
        # The README names these as ids a caller may send: a UUID and a W3C traceparent.
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_a_sane_id_from_metadata_is_used_as_is(value: str | bytes) -> None:
    metadata = [("authorization", "Bearer t"), ("X-Request-Id", value)]
    expected = value.decode() if isinstance(value, bytes) else value
    assert request_id_from_metadata(metadata) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "has space",
        "line\nbreak",
        '{"json": 1}',
        "x" * 129,
        # The README names these as ids that are replaced: base64 padding and AWS's trace header.
        "YWJjZA==",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
    ],
)
def test_a_missing_or_unsafe_id_is_replaced_by_a_new_one(value: str) -> None:
    generated = request_id_from_metadata([("x-request-id", value)])
    assert generated != value
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert request_id_from_metadata(None) != request_id_from_metadata(None)


def test_text_format_shows_the_id_or_a_dash() -> None:
    stream = io.StringIO()
    with logging_configured("INFO", stream, json_lines=False):
        logging.getLogger("t").info("outside")
        with request_id_bound("req-9"):
            logging.getLogger("t").info("inside")
        logging.getLogger("t").debug("below the level")
    outside, inside = stream.getvalue().splitlines()
    assert outside.endswith("INFO t [-]: outside")
    assert inside.endswith("INFO t [req-9]: inside")


@pytest.mark.parametrize("encoding", ["latin-1", "ascii", "utf-8"])
def test_json_lines_stay_json_on_a_stream_that_is_not_utf8(encoding: str) -> None:
    """In a Latin-1 locale a quoted file name went out as Python's `\\U0001f3ac` or a Latin-1
    byte: not JSON, not UTF-8. Escaped, it is the same text in any encoding."""
    written = io.BytesIO()
    stream = io.TextIOWrapper(written, encoding=encoding, errors="backslashreplace", write_through=True)
    with logging_configured("INFO", stream):
        logging.getLogger("videodag.test").warning("cannot read 'broken 🎬 ü.mp4'")
        logging.getLogger().handlers[0].flush()
    line = written.getvalue().decode(encoding).strip()
    assert json.loads(line)["message"] == "cannot read 'broken 🎬 ü.mp4'"
    assert line.isascii() is (encoding != "utf-8")


def test_lines_written_for_other_processes_stay_json_on_a_stderr_that_is_not_utf8(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decoder process passes FFmpeg's messages on through `json_line`, to the same stderr."""
    from videodag_service.observability.logging import json_line

    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
    line = json_line("cannot read 'broken 🎬 ü.mp4'", logger="videodag.decoder")
    assert line.isascii() and json.loads(line)["message"] == "cannot read 'broken 🎬 ü.mp4'"
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert "🎬" in json_line("cannot read 'broken 🎬 ü.mp4'", logger="videodag.decoder")
