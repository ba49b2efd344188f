"""How a run learns that its call has ended: cancelled, past its deadline, or cut by the shutdown.

gRPC tells a handler only that its call is no longer active. A run checks between frames,
and turns that into the domain error its log line and any client still listening get.
Apart from the servicer, which only translates, and from `call_slots`, which decides when
the shutdown ends a call: this module asks it.
"""

from __future__ import annotations

import threading

import grpc

from videodag_service.call_slots import RunSlots
from videodag_service.errors import DeadlineExceeded, RunCancelled
from videodag_service.observability.call_deadline import ended_by_its_deadline


class CallWatch:
    """Turns an ended or expired call into a domain error at the next `check`.

    A call still going when the shutdown's grace is over ends with SERVER_DRAINING
    (`RunSlots.ended_by_the_shutdown`). One that ends while the server only drains was ended
    by its client or its connection: gRPC's own cancel comes after the grace, never during it.
    """

    def __init__(self, context: grpc.ServicerContext, run_slots: RunSlots) -> None:
        self._context = context
        self._run_slots = run_slots
        self._done = threading.Event()
        context.add_callback(self._done.set)

    def check(self) -> None:
        self._run_slots.refuse_if_ended("the run")
        remaining = self._context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed; the run was stopped")
        if self._done.is_set() or not self._context.is_active():
            if ended_by_its_deadline(self._context):
                raise DeadlineExceeded("the call's deadline passed; the run was stopped")
            raise RunCancelled("the client cancelled the call; the run was stopped")

    def check_soon(self, seconds: float) -> None:
        """`check`, once the call has ended or `seconds` have passed: a client that died
        mid-upload can look, for a moment, like one that closed its stream early, before gRPC
        reports the call cancelled. Only for a stream already found wrong: it waits."""
        self._done.wait(seconds)
        self.check()
