"""`videodag-worker`'s stop signals before RQ's handlers are in place, in the test's own process."""

from __future__ import annotations

import io
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from videodag_service.jobs import worker_command


class _SignalledAsWritten(io.StringIO):
    """A log stream whose write gets SIGTERM, as a supervisor's stop can land at any line."""

    def write(self, text: str) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return super().write(text)


@pytest.fixture
def own_stop_handlers() -> Iterator[None]:
    """The worker's handlers, put in place in the test process, are taken away after the test."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


@pytest.mark.usefixtures("own_stop_handlers")
def test_a_stop_signal_landing_in_a_log_line_at_the_workers_start_ends_the_start() -> None:
    """The worker's start logs lines (RQ's among them); a log handler catches any Exception its
    write raises and prints it: the stop was swallowed there, and the worker worked on."""
    logger = logging.getLogger("videodag-test-stop-in-a-log-line")
    stream = _SignalledAsWritten()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        received = worker_command._stop_on_signals()
        with pytest.raises(worker_command._ToldToStop, match="SIGTERM"):
            logger.warning("the worker starts")
        assert received == [signal.SIGTERM], "kept for RQ's handlers, should the raise be lost elsewhere"
    finally:
        logger.removeHandler(handler)

