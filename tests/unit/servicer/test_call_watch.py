"""What a run's call is said to have ended by: its client, its deadline, or the server's shutdown."""

from __future__ import annotations

import pytest

from fakes.servicer_context import FakeServicerContext
from videodag_service.call_slots import RunSlots
from videodag_service.call_watch import CallWatch
from videodag_service.errors import DeadlineExceeded, RunCancelled, ServerDraining


def test_a_call_its_client_ends_while_the_server_drains_is_the_clients_cancel() -> None:
    """gRPC cancels no call during the grace: a call that ends then was ended by its client, and
    the log must not put it down to the server's shutdown."""
    context, slots = FakeServicerContext(), RunSlots(1)
    watch = CallWatch(context, slots)
    slots.start_draining()
    context.end()
    with pytest.raises(RunCancelled, match="the client cancelled the call"):
        watch.check()


def test_a_call_still_going_when_the_grace_is_over_ends_with_server_draining() -> None:
    context, slots = FakeServicerContext(), RunSlots(1)
    watch = CallWatch(context, slots)
    watch.check()
    slots.end_calls()
    with pytest.raises(ServerDraining, match="the server shut down before the run ended"):
        watch.check()
    context.end()  # gRPC's own cancel, a second later
    with pytest.raises(ServerDraining):
        watch.check()


def test_a_call_past_its_deadline_ends_with_deadline_exceeded() -> None:
    with pytest.raises(DeadlineExceeded, match="the call's deadline passed"):
        CallWatch(FakeServicerContext(time_remaining=0.0), RunSlots(1)).check()
    ended_at_its_deadline = FakeServicerContext(time_remaining=0.2)  # the client's clock ran ahead
    watch = CallWatch(ended_at_its_deadline, RunSlots(1))
    ended_at_its_deadline.end()
    with pytest.raises(DeadlineExceeded):
        watch.check()
