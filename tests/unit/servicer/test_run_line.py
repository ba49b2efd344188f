"""The runs' line: TOO_MANY_RUNS hints at the wait a newcomer would have, from the runs' recent length."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from fakes.servicer_context import FakeServicerContext
from videodag_service import call_slots
from videodag_service.call_slots import RunSlots
from videodag_service.errors import RunCancelled, ServerDraining, TooManyRuns


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


def test_a_slot_freed_in_a_drain_goes_to_no_call_in_line() -> None:
    """The call in line is refused SERVER_DRAINING: given the slot, it would start a run after
    the shutdown began and stretch the drain by a whole run."""
    slots = RunSlots(1, max_waiting=1, wait_seconds=30.0)
    running = contextlib.ExitStack()
    running.enter_context(slots.hold()).wait()
    with slots.hold() as waiting:
        slots.start_draining()
        running.close()  # the run ends: its slot is given back
        assert not waiting.granted.is_set()
        with pytest.raises(ServerDraining):
            waiting.wait()
    assert (slots.active, slots.waiting) == (0, 0)


def test_a_call_granted_a_slot_before_the_drain_begins_no_work_after_it() -> None:
    slots = RunSlots(1)
    with slots.hold() as turn:
        slots.start_draining()  # while the call still waits for its config
        with pytest.raises(ServerDraining):
            turn.wait()
    assert slots.active == 0


def test_before_any_run_has_ended_the_hint_counts_the_runs_going_at_their_age(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(call_slots.time, "monotonic", lambda: now[0])
    slots = RunSlots(2)
    with slots.hold() as first, slots.hold() as second:
        first.wait()
        second.wait()
        now[0] += 6.0
        assert slots.refusal().details.retry_after_seconds == pytest.approx(3.0)  # 6 s runs, 1 call, 2 slots


def test_a_call_whose_deadline_comes_first_is_refused_too_many_runs_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """It waited out its deadline in line and got DEADLINE_EXCEEDED: no retry hint, nothing to
    say the server was full."""
    monkeypatch.setattr(call_slots, "_REFUSAL_BEFORE_DEADLINE_SECONDS", 0.7)  # a wide margin: a loaded machine
    slots = RunSlots(1, max_waiting=1, wait_seconds=30.0)
    with slots.hold() as running:
        running.wait()
        began = time.monotonic()
        with pytest.raises(TooManyRuns) as refused, slots.hold(FakeServicerContext(time_remaining=1.0)) as waiting:
            waiting.wait()
        waited = time.monotonic() - began
    assert 0.2 <= waited < 1.0, "refused before its deadline, after waiting in line"
    assert refused.value.details.retry_after_seconds is not None
    assert (slots.active, slots.waiting) == (0, 0)


def test_a_call_with_too_little_time_left_to_wait_is_refused_at_once() -> None:
    slots = RunSlots(1, max_waiting=1, wait_seconds=30.0)
    with slots.hold() as running:
        running.wait()
        began = time.monotonic()
        with pytest.raises(TooManyRuns), slots.hold(FakeServicerContext(time_remaining=0.1)) as waiting:
            waiting.wait()
        assert time.monotonic() - began < 1.0


def test_a_call_whose_client_leaves_the_line_ends_cancelled_not_refused() -> None:
    """It ended as TOO_MANY_RUNS, a refusal no one heard, and so was left out of the runs'
    count, which the README has count every cancel (one that left before its config counted)."""
    slots = RunSlots(1, max_waiting=1, wait_seconds=30.0)
    with slots.hold() as running:
        running.wait()
        context = FakeServicerContext()
        with pytest.raises(RunCancelled, match="the client left while the call waited for a run slot"), \
                slots.hold(context) as waiting:
            threading.Timer(0.2, context.cancel).start()
            waiting.wait()
    assert (slots.active, slots.waiting) == (0, 0)
