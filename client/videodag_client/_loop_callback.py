"""A caller's callback handed to the blocking client, run in the caller's event loop instead.

The async client passes its callers' progress and reconnect callbacks to the blocking client,
which calls them from its own threads; `LoopCallback` runs each call in the event loop, and
brings what it raised back to the call. Apart from the client and its streams, which only
hand it over, set its loop, and ask it for a failure at each step.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from videodag_client._upload import DeferredProgress

_LOOP_CHECK_SECONDS = 0.05  # how often an upload waiting for its callbacks checks that their loop still runs
# How long an upload's end waits for the coroutines its progress reports returned: well under
# the server's upload idle limit (60 s by default), which a longer silence would trip.
_COROUTINES_WAIT_SECONDS = 10.0


def _runs_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _waited_while_running(
    event: threading.Event, loop: asyncio.AbstractEventLoop, abandoned: Callable[[], bool], limit: float | None
) -> bool:
    """Whether `event` was set before the loop stopped, `abandoned()` or `limit` seconds passed."""
    deadline = None if limit is None else time.monotonic() + limit
    while not event.wait(_LOOP_CHECK_SECONDS):
        if abandoned() or not loop.is_running() or (deadline is not None and time.monotonic() > deadline):
            return False
    return True


class LoopCallback(DeferredProgress):
    """A caller's callback, called by the blocking client from its threads and run in the event
    loop instead, without waiting for it: the upload is not held back by a busy loop, nor stuck
    behind one that has stopped. An exception it raises (or its coroutine's) is kept, and
    raised in the blocking client's thread at its next call, which stops the call as the
    blocking client's own callback would; the async side raises it at its next step too.

    An upload waits for its reports once, before it ends (`wait_until_run`), while the loop
    runs: a report the loop ran only after the last chunk left would otherwise fail a call
    the server had already taken whole (a job queued). The coroutines they returned are
    waited for up to `_COROUTINES_WAIT_SECONDS`; one still running then raises, if it does,
    from the call's next step, as any other failure of the callback does.
    """

    def __init__(self, callback: Callable[..., object]) -> None:
        self._callback = callback
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop to run it in: the one iterating the stream (set at each step) or awaiting the call."""
        self._error: BaseException | None = None
        self._running: set[asyncio.Future[Any]] = set()  # coroutines it returned, until they end
        self._late_failure_message: str | None = None  # set once its call is over (`hand_failures_to_loop`)

    @classmethod
    def of(cls, callback: Callable[..., object] | None) -> LoopCallback | None:
        return None if callback is None else cls(callback)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def raised(self, error: BaseException) -> None:
        """The caller raises `error`: if it is the failure kept, the end of the call does not hand
        it to the loop's exception handler as well."""
        if self._error is error:
            self._error = None

    def __call__(self, *args: Any) -> None:
        self.raise_if_failed()
        if self.loop is None:
            raise RuntimeError("the callback has no event loop to run in")
        self.loop.call_soon_threadsafe(self._run, args)  # RuntimeError once that loop is closed

    def wait_until_run(self, abandoned: Callable[[], bool]) -> None:
        """Returns once the loop ran the calls handed over so far (and their coroutines ended, or
        `_COROUTINES_WAIT_SECONDS` passed), or at once when the loop has stopped (they will not
        run until it starts again), is closed, or is this thread's own, or when `abandoned()`;
        raises what one of them raised."""
        loop = self.loop
        if loop is None or _runs_in(loop):
            return
        ran, ended = threading.Event(), threading.Event()
        try:
            loop.call_soon_threadsafe(self._mark_reached, ran, ended)  # after the calls before it: FIFO
        except RuntimeError:  # the loop is closed
            return
        if _waited_while_running(ran, loop, abandoned, None):
            _waited_while_running(ended, loop, abandoned, _COROUTINES_WAIT_SECONDS)
            self.raise_if_failed()

    def _mark_reached(self, ran: threading.Event, ended: threading.Event) -> None:
        ran.set()
        if not self._running:
            ended.set()
            return
        waiting = asyncio.gather(*self._running, return_exceptions=True)
        waiting.add_done_callback(lambda _: ended.set())

    def _run(self, args: tuple[Any, ...]) -> None:
        try:
            result = self._callback(*args)
        except Exception as error:
            self._fail(error)
            return
        if inspect.isawaitable(result):
            running = asyncio.ensure_future(result)
            self._running.add(running)
            running.add_done_callback(self._ended)

    def _ended(self, running: asyncio.Future[Any]) -> None:
        self._running.discard(running)
        if not running.cancelled() and (error := running.exception()) is not None:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self._late_failure_message is not None and self.loop is not None:
            self.loop.call_exception_handler({"message": self._late_failure_message, "exception": error})
        elif self._error is None:
            self._error = error

    def take_failure(self) -> BaseException | None:
        """The exception kept for the caller, if any, which the caller now raises."""
        error, self._error = self._error, None
        return error

    def hand_failures_to_loop(self, message: str) -> None:
        """The call is over: an exception kept, or raised later by a coroutine still running, goes
        to the loop's exception handler with `message` (logged by default), not to the caller.
        The first message given stays."""
        if self._late_failure_message is not None:
            return
        self._late_failure_message = message
        error, self._error = self._error, None
        if error is not None:
            self._fail(error)

    async def settled(self) -> None:
        """Once the calls made so far have run in the loop, and the coroutines they returned ended
        or `_COROUTINES_WAIT_SECONDS` passed: one that never ends (awaiting a hung request) would
        otherwise hold the end of the caller's iteration for good."""
        await asyncio.sleep(0)  # calls handed over before this point run first (call_soon is FIFO)
        if self._running:
            await asyncio.wait(set(self._running), timeout=_COROUTINES_WAIT_SECONDS)
