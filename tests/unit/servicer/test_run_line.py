"""The runs' line: TOO_MANY_RUNS hints at the wait a newcomer would have, from the runs' recent length."""

from __future__ import annotations

import contextlib

import pytest

from videodag_service import call_slots
from videodag_service.call_slots import RunSlots
from videodag_service.errors import TooManyRuns


def test_the_retry_hint_is_the_wait_the_line_promises_a_newcomer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of about 10 s, one slot, two calls in line: a newcomer would wait about 30 s."""
    now = [0.0]
    monkeypatch.setattr(call_slots.time, "monotonic", lambda: now[0])
    slots = RunSlots(1, max_waiting=2, wait_seconds=1000.0)
    for _ in range(30):
        with slots.hold() as turn:
            turn.wait()
            now[0] += 10.0
    with contextlib.ExitStack() as calls:
        calls.enter_context(slots.hold()).wait()
        calls.enter_context(slots.hold())
        calls.enter_context(slots.hold())
        assert slots.waiting == 2
        with pytest.raises(TooManyRuns) as full, slots.hold():
            pass
        now[0] += 10.0
    assert full.value.details.retry_after_seconds == pytest.approx(30.0, abs=0.1)
    assert slots.refusal().details.retry_after_seconds == pytest.approx(10.0, abs=0.1)  # the line is empty again
    assert (slots.waiting, slots.active) == (0, 0)
