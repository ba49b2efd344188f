"""Logging never holds the code that logs when stderr is a pipe nobody reads."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading

from fakes.thread_limits import no_new_threads
from fakes.waiting import wait_until
from videodag_service.observability.log_stream import WRITER_THREAD_NAME, UnblockingStreamHandler


def _logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_a_pipe_nobody_reads_holds_no_caller_and_the_lines_come_in_order_once_it_is_read() -> None:
    """A log collector that stopped reading: calls that logged hung, and SIGTERM's drain never ended."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    handler = UnblockingStreamHandler(stream, max_waiting_lines=500)
    logger = _logger_to(handler, "test.unread_pipe")
    logging_done = threading.Event()

    def log_a_lot() -> None:
        for number in range(3000):  # about 300 KB: the pipe holds 64 KB
            logger.info("line %05d %s", number, "x" * 80)
        logging_done.set()

    threading.Thread(target=log_a_lot, daemon=True).start()
    assert logging_done.wait(10), "logging blocked on the full pipe"
    received = bytearray()

    def read_all() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    handler.flush()
    stream.close()
    reader.join(10)
    os.close(read_end)
    lines = received.decode().splitlines()
    numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
    assert numbers == sorted(numbers) and numbers[0] == 0, "in order, from the first"
    assert 500 < len(numbers) < 3000, "some waited and were written, the rest were dropped"
    assert lines[-1] == f"{3000 - len(numbers)} log lines were dropped: stderr was not being read"
    assert wait_until(lambda: WRITER_THREAD_NAME not in {thread.name for thread in threading.enumerate()}), (
        "the writer ends once nothing waits")


def test_a_stream_that_is_no_pipe_is_written_at_once() -> None:
    buffer = io.StringIO()
    logger = _logger_to(UnblockingStreamHandler(buffer), "test.buffer")
    logger.info("first")
    logger.info("second")
    assert buffer.getvalue() == "first\nsecond\n"


def test_a_writer_that_could_not_start_holds_no_caller_and_the_next_line_starts_one() -> None:
    """The writer thread that failed to start (a pids limit) was kept all the same: the line's
    caller got the error, and every later line waited for it, then was dropped."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    handler = UnblockingStreamHandler(stream)
    logger = _logger_to(handler, "test.no_writer")
    long_line = "x" * 2000  # too long to be sure of the pipe's room: it goes through the writer
    with no_new_threads(WRITER_THREAD_NAME):
        logger.info("first %s", long_line)
    logger.info("second %s", long_line)
    handler.flush()
    stream.close()
    with os.fdopen(read_end, encoding="utf-8") as received:
        assert [line.split()[0] for line in received.read().splitlines()] == ["first", "second"]


def test_lines_waiting_for_a_writer_that_cannot_start_go_out_once_the_pipe_has_room() -> None:
    """Without the writer they waited for the next thread that could start, and were dropped
    once 10,000 waited, however much room the pipe had."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    logger = _logger_to(UnblockingStreamHandler(stream), "test.no_writer_room")
    filler = b"." * 4096
    with contextlib.suppress(BlockingIOError):
        os.set_blocking(write_end, False)
        while True:
            os.write(write_end, filler)
    os.set_blocking(write_end, True)
    with no_new_threads(WRITER_THREAD_NAME):
        logger.info("first")  # the pipe is full: it waits
        while True:  # the reader catches up
            try:
                os.read(read_end, 65536)
            except BlockingIOError:
                break
        logger.info("second")
        assert os.read(read_end, 65536) == b"first\nsecond\n"
    stream.close()
    os.close(read_end)
