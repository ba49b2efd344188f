"""Caps on the calls that hold a server thread for long: runs, job uploads, job watches,
health watches and reflection streams.

gRPC's synchronous server gives each call a thread for its whole life, and refuses a call
that finds no free thread with a bare RESOURCE_EXHAUSTED, whatever the call: enough
dashboards watching long jobs, or clients uploading large videos, would starve runs,
listings and lookups alike. A call over its kind's cap is refused at once, never queued,
with a typed error and a retry hint instead, and the server's threads cover every cap
(`server`). Runs' slots also carry the server's shutdown: new work is refused once it has
begun, and calls still going end when its grace is over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from videodag_service.call_status import abort
from videodag_service.errors import ErrorDetails, ServerDraining, TooManyRuns, VideodagError
from videodag_service.wording import counted

RUN_RETRY_SECONDS = 1.0


class CallSlots:
    """At most `capacity` calls of one kind at once; `refusal(capacity)` is the error past it."""

    def __init__(self, capacity: int, refusal: Callable[[int], VideodagError]) -> None:
        self.capacity = capacity
        self._refusal = refusal
        self._semaphore = threading.BoundedSemaphore(capacity)
        self._active = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A slot while the block runs; raises the refusal at once when none is free."""
        self._take()
        try:
            yield
        finally:
            self._give_back()

    def hold_until_the_call_ends(self, context: grpc.ServicerContext) -> None:
        """A slot until the call ends, for a handler that returns before its stream does (the
        health and reflection servicers gRPC's packages provide); aborts the call when none is free."""
        try:
            self._take()
        except VideodagError as refused:
            abort(context, refused)
        if not context.add_callback(self._give_back):  # the call has ended already
            self._give_back()

    @property
    def active(self) -> int:
        """Calls holding a slot now: the server waits for them to end at shutdown."""
        with self._changed:
            return self._active

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the calls holding a slot to end; True if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._active == 0, timeout=max(0.0, timeout))

    def _take(self) -> None:
        if not self._semaphore.acquire(blocking=False):
            raise self._refusal(self.capacity)
        with self._changed:
            self._active += 1

    def _give_back(self) -> None:
        with self._changed:
            self._active -= 1
            self._changed.notify_all()
        self._semaphore.release()


def too_many_runs(capacity: int) -> TooManyRuns:
    return TooManyRuns(
        f"the server already runs its maximum of {counted(capacity, 'video', 'videos')}; retry shortly",
        ErrorDetails(metadata={"max_concurrent_runs": str(capacity)}, retry_after_seconds=RUN_RETRY_SECONDS),
    )


class RunSlots(CallSlots):
    """The runs' slots, and the server's shutdown: draining (new work refused), then ending
    (the grace is over, calls still going end at their next step)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, too_many_runs)
        self._draining = threading.Event()
        self._ending = threading.Event()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.refuse_if_draining()
        with super().hold():
            # Again once counted: a drain that began between the check and the slot may have
            # found no run to wait for and ended its grace, and the run would have been cut
            # off at its first step instead of refused.
            self.refuse_if_draining()
            yield

    def refuse_if_draining(self) -> None:
        """New work is refused with UNAVAILABLE once shutdown has begun."""
        if self._draining.is_set():
            raise ServerDraining("the server is shutting down; retry on another replica")

    def start_draining(self) -> None:
        self._draining.set()

    def end_calls(self) -> None:
        """The grace is over: calls still going end at their next step, with SERVER_DRAINING."""
        self._draining.set()
        self._ending.set()

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun."""
        return self._draining.is_set()

    @property
    def ending(self) -> bool:
        """Whether the shutdown grace is over (see `end_calls`)."""
        return self._ending.is_set()

    def ended_by_the_shutdown(self, what: str) -> ServerDraining | None:
        """The error of a call (`what`: "the run", "the upload") the shutdown ends: one still going
        once the grace is over; None before.

        The one place that decides it. gRPC cancels the calls still going only after
        `end_calls` (`RunningServer.stop`), so a call that ends while the server only drains
        was ended by its client or its connection, and says so. `call_status` keeps this
        error as the status of a call gRPC has ended already: it is the call's own end."""
        if self._ending.is_set():
            return ServerDraining(f"the server shut down before {what} ended; retry on another replica")
        return None

    def refuse_if_ended(self, what: str) -> None:
        """Ends a call still going when the grace is over, with a typed error its client can act on."""
        if (ended := self.ended_by_the_shutdown(what)) is not None:
            raise ended
