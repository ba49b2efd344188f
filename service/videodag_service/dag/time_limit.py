"""Run calls in a thread of their own, so a step that outlives its time limit can be given up on.

Python cannot stop a thread, and a plugin stuck in native code (a decoder, an inference
session, a lock) cannot even be interrupted. What the owner *can* do is stop waiting: the
call runs in a `StepLimitedThread`, the owner waits with a deadline per step (a node call),
and when a step is over the limit it raises `StepTimedOut` and abandons the thread. The
abandoned thread is a daemon, so it never blocks the process from exiting; if its step ever
returns, it runs the cleanup the owner left it (closing what the step was using, which the
owner must not close under a running call) and ends. `abandoned_thread_count()` tells how
many such threads are still stuck, for logs and metrics.

One thread serves every call of its owner, one at a time, so the code it runs sees a single
thread throughout (stateful plugins need not be thread-safe). The cost is one hand-off per
call, which is why owners without a limit call directly instead, unless they want the
thread itself: an owner may `submit` a call, do other work, and collect its `result` later
(the run's frames in flight, see `executor`). The thread runs plugins, frame work, so it
runs under the batch policy (`scheduling`).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from videodag_service.scheduling import run_as_batch
from videodag_service.wording import plain_number

logger = logging.getLogger(__name__)

T = TypeVar("T")

Progress = Callable[[], "tuple[object, float] | None"]
"""Returns the step running now and its `time.perf_counter()` start, or None between steps."""

_STOP = object()
_abandoned_lock = threading.Lock()
_abandoned_threads = 0


def abandoned_thread_count() -> int:
    """Threads given up on after a step ran over its limit, and not returned since."""
    with _abandoned_lock:
        return _abandoned_threads


def _count_abandoned(change: int) -> None:
    global _abandoned_threads
    with _abandoned_lock:
        _abandoned_threads += change


class StepTimedOut(Exception):
    """Raised to the owner when a step ran over the limit; the thread running it is abandoned."""

    def __init__(self, step: object, limit_seconds: float) -> None:
        super().__init__(f"step {step!r} ran over its limit of {plain_number(limit_seconds)} s")
        self.step = step
        self.limit_seconds = limit_seconds


class StepLimitedThread:
    """Runs its owner's calls one at a time in one daemon thread; each step gets `limit_seconds`.

    The owner calls `call` (or `submit`, then `result`); the code it runs reports its steps
    through `progress` (what runs now and since when). The clock is per step, not per call: a
    call of many quick steps may last longer than the limit. Time outside any step (between
    steps) is not limited, and with `limit_seconds` None nothing is.
    """

    def __init__(self, limit_seconds: float | None, progress: Progress, thread_name: str) -> None:
        if limit_seconds is not None and limit_seconds <= 0:
            raise ValueError(f"limit_seconds must be positive or None, got {limit_seconds}")
        self.limit_seconds = limit_seconds
        self._progress = progress
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._abandoned = False
        self._abandoned_step_returned = False
        self._after_abandoned: Callable[[], None] | None = None
        # In a copy of the creator's context: a plugin's log lines carry the run's request id.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._serve,), name=thread_name,
                                        daemon=True)
        self._thread.start()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def call(self, function: Callable[[Any], T], argument: Any) -> T:
        """`function(argument)` in the thread; its exception is raised here.

        Raises StepTimedOut when a step runs over the limit; the thread is then abandoned and
        this object unusable. `abandon` must be called next, with the cleanup to run if the
        step ever returns.
        """
        self.submit(function, argument)
        return cast(T, self.result())

    def submit(self, function: Callable[[Any], object], argument: Any) -> None:
        """Start `function(argument)` in the thread; `result` waits for it. Calls run in order."""
        if self._abandoned:
            raise RuntimeError("the thread was abandoned after a step ran over its limit")
        self._requests.put((function, argument))

    def ready(self) -> bool:
        """Whether the oldest submitted call has returned (so `result` would not wait)."""
        return not self._outcomes.empty()

    def result(self) -> Any:
        """What the oldest submitted call returned; its exception is raised here.

        Raises StepTimedOut when a step runs over the limit, as `call` does.
        """
        while True:
            try:
                succeeded, value = self._outcomes.get(timeout=self._seconds_left())
                break
            except queue.Empty:
                step = self._overdue_step()
                if step is not None and self._give_up():
                    assert self.limit_seconds is not None
                    raise StepTimedOut(step, self.limit_seconds) from None
        if succeeded:
            return value
        raise value

    def abandon(self, cleanup: Callable[[], None]) -> None:
        """Leave `cleanup` to the abandoned thread: it runs it if its step ever returns, then ends."""
        with self._lock:
            returned_already = self._abandoned_step_returned
            if not returned_already:
                self._after_abandoned = cleanup
        if returned_already:
            cleanup()

    def close(self) -> None:
        """Stop and join the thread; an abandoned thread is left to end on its own."""
        if self._abandoned:
            return
        self._requests.put(_STOP)
        self._thread.join()

    def _give_up(self) -> bool:
        """Abandon the thread, unless its call returned just now (then its outcome is waiting)."""
        with self._lock:
            if not self._outcomes.empty():
                return False
            self._abandoned = True
        _count_abandoned(+1)
        return True

    def _seconds_left(self) -> float | None:
        current = self._progress()
        if current is None or self.limit_seconds is None:
            return self.limit_seconds
        _, started = current
        return max(0.0, started + self.limit_seconds - time.perf_counter())

    def _overdue_step(self) -> object | None:
        current = self._progress()
        if current is None or self.limit_seconds is None:
            return None
        step, started = current
        return step if time.perf_counter() - started >= self.limit_seconds else None

    def _serve(self) -> None:
        run_as_batch()
        while (request := self._requests.get()) is not _STOP:
            function, argument = request
            # Nothing of a call outlives it here: its argument may be a frame lent from the
            # decoder's ring, which goes back only once nothing holds it.
            del request
            try:
                outcome: tuple[bool, Any] = (True, function(argument))
            except BaseException as error:  # raised to the owner by `call`
                outcome = (False, error)
            del function, argument
            if not self._deliver(outcome):
                self._end_abandoned()
                return
            del outcome

    def _deliver(self, outcome: tuple[bool, Any]) -> bool:
        """Hand the outcome to the owner; False if the owner gave up on it (see `_give_up`)."""
        with self._lock:
            if self._abandoned:
                return False
            self._outcomes.put(outcome)
            return True

    def _end_abandoned(self) -> None:
        """The step the owner gave up on has returned: clean up what it held, then end."""
        logger.warning("a step abandoned after its time limit has returned; its thread ends")
        try:
            with self._lock:
                self._abandoned_step_returned = True
                cleanup, self._after_abandoned = self._after_abandoned, None
            if cleanup is not None:
                cleanup()
        except Exception:
            logger.exception("cleaning up after an abandoned step failed")
        finally:
            _count_abandoned(-1)
