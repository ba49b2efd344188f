"""Caps on the calls that hold a server thread for long: runs, job uploads, job watches,
health watches and reflection streams.

gRPC's synchronous server gives each call a thread for its whole life, and refuses a call
that finds no free thread with a bare RESOURCE_EXHAUSTED, whatever the call: enough
dashboards watching long jobs, or clients uploading large videos, would starve runs,
listings and lookups alike. A call over its kind's cap is refused with a typed error and a
retry hint instead, and the server's threads cover every cap (`server`).

Runs alone wait in a line, first come first served, for a while: refused at once, the slot a
run frees goes to whoever calls first, which is the caller that just finished, so callers
that wait out their hint can be shut out for as long as others keep calling. Runs' slots also
carry the server's shutdown: new work is refused once it has begun, and calls still going
end when its grace is over.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from videodag_service.call_status import abort
from videodag_service.errors import (
    EndedByShutdown,
    ErrorDetails,
    RunCancelled,
    ServerDraining,
    TooManyRuns,
    VideodagError,
)
from videodag_service.wording import counted

# The shortest and longest retry hint of TOO_MANY_RUNS, which otherwise follows the runs' recent length.
RUN_RETRY_SECONDS = 1.0
MAX_RUN_RETRY_SECONDS = 60.0
# How often a caller in line looks whether its client left or the server began shutting down.
_LINE_CHECK_SECONDS = 0.2
# How long before its deadline a call in line gives up, so that its refusal reaches the client first.
_REFUSAL_BEFORE_DEADLINE_SECONDS = 0.25
# How much each finished run moves the recent run length the retry hint is made of.
_RECENT_RUN_WEIGHT = 0.2


class _CountedSlots:
    """A kind's slots, counted: the server's shutdown waits for the calls holding them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._active = 0
        self._changed = threading.Condition()

    @property
    def active(self) -> int:
        """Calls holding a slot now: the server waits for them to end at shutdown."""
        with self._changed:
            return self._active

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the calls holding a slot to end; True if none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._active == 0, timeout=max(0.0, timeout))


class CallSlots(_CountedSlots):
    """At most `capacity` calls of one kind at once; `refusal(capacity)` is the error past it, at once."""

    def __init__(self, capacity: int, refusal: Callable[[int], VideodagError]) -> None:
        super().__init__(capacity)
        self._refusal = refusal

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

    def _take(self) -> None:
        with self._changed:
            if self._active >= self.capacity:
                raise self._refusal(self.capacity)
            self._active += 1

    def _give_back(self) -> None:
        with self._changed:
            self._active -= 1
            self._changed.notify_all()


class RunTurn:
    """A call's place in the runs' line, from the call's start: `wait` blocks until the place
    is a slot. The call reads and checks its config meanwhile, so a config the server refuses
    is refused at once, not after the wait."""

    def __init__(self, slots: RunSlots, context: grpc.ServicerContext | None) -> None:
        self._slots = slots
        self._context = context
        self._joined = time.monotonic()
        self.granted = threading.Event()

    def wait(self) -> None:
        """Until this call holds a run slot; TOO_MANY_RUNS once it has waited the line's time,
        or just before the call's own deadline, SERVER_DRAINING if the server begins shutting
        down, and CANCELLED (`RunCancelled`) if its client leaves."""
        deadline = self._joined + self._slots.wait_seconds
        # A client whose deadline comes first hears TOO_MANY_RUNS and when to retry, not
        # DEADLINE_EXCEEDED, which tells it nothing of a full server.
        remaining = self._context.time_remaining() if self._context is not None else None
        if remaining is not None:
            deadline = min(deadline, time.monotonic() + remaining - _REFUSAL_BEFORE_DEADLINE_SECONDS)
        while not self.granted.wait(timeout=max(0.0, min(_LINE_CHECK_SECONDS, deadline - time.monotonic()))):
            left = self._context is not None and not self._context.is_active()
            if left or self._slots.draining or time.monotonic() >= deadline:
                if self._slots.leave_line(self):
                    if left:  # its client's cancel, counted as such in the runs: not a refusal it never heard
                        raise RunCancelled("the client left while the call waited for a run slot")
                    self._slots.refuse_if_draining()
                    raise self._slots.refusal(waited_seconds=time.monotonic() - self._joined)
                break  # the slot came as it gave up
        # Work not begun when the shutdown begins is refused, a slot held since the call's start included.
        self._slots.refuse_if_draining()


class RunSlots(_CountedSlots):
    """The runs' slots with their line, and the server's shutdown: draining (new work refused),
    then ending (the grace is over, calls still going end at their next step).

    A freed slot goes straight to the first call in line, never back to the pool where a
    newcomer could take it first. At most `max_waiting` calls wait, each at most `wait_seconds`
    from its start; the refusal's retry hint is the expected wait: the runs' recent length times
    the line ahead per slot (the runs going counted at their age so far, if longer)."""

    def __init__(self, capacity: int, *, max_waiting: int = 0, wait_seconds: float = 0.0) -> None:
        super().__init__(capacity)
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self._line: deque[RunTurn] = deque()
        self._granted_at: dict[RunTurn, float] = {}
        self._recent_run_seconds = RUN_RETRY_SECONDS
        self._draining = threading.Event()
        self._ending = threading.Event()

    @contextmanager
    def hold(self, context: grpc.ServicerContext | None = None) -> Iterator[RunTurn]:
        """A place in line (a slot at once when one is free and nobody waits) while the block
        runs; the block calls `wait()` on it before the work the slot is for."""
        self.refuse_if_draining()
        turn = self._join(context)
        try:
            # Again once counted: a drain that began between the check and the slot may have
            # found no run to wait for and ended its grace, and the run would have been cut
            # off at its first step instead of refused.
            self.refuse_if_draining()
            yield turn
        finally:
            if not self.leave_line(turn):
                self._pass_on(turn)

    @property
    def waiting(self) -> int:
        """Calls in line for a slot now."""
        with self._changed:
            return len(self._line)

    def refusal(self, waited_seconds: float | None = None) -> TooManyRuns:
        """TOO_MANY_RUNS, its retry hint the wait the line now promises a newcomer; `waited_seconds`
        for a call that waited its time in line, which its message says."""
        with self._changed:
            ahead = len(self._line) + 1
            now = time.monotonic()
            # The runs going count too: a run already longer than the recent ones will be longer still.
            ages = [now - granted for granted in self._granted_at.values()]
            run_seconds = max(self._recent_run_seconds, sum(ages) / len(ages) if ages else 0.0)
            hint = run_seconds * ahead / self.capacity
        slots = counted(self.capacity, "video", "videos")
        if waited_seconds is not None:
            message = f"no run slot came free in {waited_seconds:.1f} s in line (the server runs at most {slots})"
        elif self.max_waiting:
            waiting = counted(ahead - 1, "call", "calls")
            message = f"the server already runs its maximum of {slots} and {waiting} waiting"
        else:
            message = f"the server already runs its maximum of {slots}"
        return TooManyRuns(
            f"{message}; retry shortly",
            ErrorDetails(metadata={"max_concurrent_runs": str(self.capacity),
                                   "max_waiting_runs": str(self.max_waiting)},
                         retry_after_seconds=round(min(max(hint, RUN_RETRY_SECONDS), MAX_RUN_RETRY_SECONDS), 1)),
        )

    def leave_line(self, turn: RunTurn) -> bool:
        """Take `turn` out of the line (if still in it); False if it holds a slot (granted meanwhile included)."""
        with self._changed:
            if turn.granted.is_set():
                return False
            if turn in self._line:
                self._line.remove(turn)
            return True

    def _join(self, context: grpc.ServicerContext | None) -> RunTurn:
        turn = RunTurn(self, context)
        with self._changed:
            if self._active < self.capacity and not self._line:
                self._grant(turn)
                return turn
            if len(self._line) >= self.max_waiting:
                full = True
            else:
                self._line.append(turn)
                full = False
        if full:
            raise self.refusal()
        return turn

    def _grant(self, turn: RunTurn) -> None:
        """Under the lock: `turn` holds a slot from now."""
        self._active += 1
        self._granted_at[turn] = time.monotonic()
        turn.granted.set()

    def _pass_on(self, turn: RunTurn) -> None:
        """`turn`'s slot goes to the first call in line, or back to the pool if nobody waits."""
        with self._changed:
            held = time.monotonic() - self._granted_at.pop(turn)
            self._recent_run_seconds += _RECENT_RUN_WEIGHT * (held - self._recent_run_seconds)
            self._active -= 1
            if self._line and not self._draining.is_set():  # in a drain, the line is refused instead
                self._grant(self._line.popleft())
            self._changed.notify_all()

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

    def ended_by_the_shutdown(self, what: str) -> EndedByShutdown | None:
        """The error of a call (`what`: "the run", "the upload") the shutdown ends: one still going
        once the grace is over; None before.

        The one place that decides it. gRPC cancels the calls still going only after
        `end_calls` (`RunningServer.stop`), so a call that ends while the server only drains
        was ended by its client or its connection, and says so. `call_status` keeps this
        error as the status of a call gRPC has ended already: it is the call's own end."""
        if self._ending.is_set():
            return EndedByShutdown(f"the server shut down before {what} ended; retry on another replica")
        return None

    def refuse_if_ended(self, what: str) -> None:
        """Ends a call still going when the grace is over, with a typed error its client can act on."""
        if (ended := self.ended_by_the_shutdown(what)) is not None:
            raise ended
