"""Reading a client's stream on a thread of its own, given up once the client has sent nothing for a limit.

gRPC's blocking API cannot give up on a wait for the client's next message, so the waiting
moves to a thread of its own: `run_watching_idle` runs the work that reads the stream on that
thread while the calling thread watches the items arrive, with no extra hand-off per item.
Once the limit passes, the calling thread raises the error `WatchedItems.expire()` gives
(`IdleTimeout`), its status ends the call, and the working thread, woken by that end, stops
with the same error instead of taking the cut-off stream for a whole one.

Apart from uploads (`upload_idle`), which add a minimum rate and an error naming the upload,
because a reflection stream waits for its next request the same way (`reflection_idle`) and
must not be told it was an upload.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from videodag_service.wording import plain_number

T = TypeVar("T")
Item = TypeVar("Item")


class IdleTimeout(Exception):
    """Raised when a watched stream has sent nothing for its limit; each caller says what that
    means to its client (an upload's `UploadIdle`, a reflection stream's quiet end)."""

    def __init__(self, idle_seconds: float) -> None:
        super().__init__(f"nothing arrived for {plain_number(idle_seconds)} s")
        self.idle_seconds = idle_seconds


class WatchedItems(Iterator[Item], Generic[Item]):
    """A stream's items, noting when each arrives. Once `expire()`d, the next step raises the
    expiry's error, also in place of the end of stream the abandoned call then reaches."""

    def __init__(self, items: Iterator[Item], idle_seconds: float) -> None:
        if not idle_seconds > 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds}")
        self._items = items
        self.idle_seconds = idle_seconds
        self._waiting_since: float | None = time.monotonic()  # the reader asks for the first at once
        self._ended = False
        self._expired: BaseException | None = None
        self._credit = idle_seconds
        """The waiting time left to the client: each item restores it (`_credit_after`)."""

    def __iter__(self) -> WatchedItems[Item]:
        return self

    def __next__(self) -> Item:
        if self._expired is not None:
            raise self._expired
        waiting_since = self._waiting_since = time.monotonic()
        try:
            item = next(self._items)
        except StopIteration:
            if self._expired is not None:  # the stream ended because the call was given up
                raise self._expired from None
            self._ended = True
            raise
        finally:
            self._waiting_since = None
        self._credit = self._credit_after(item, time.monotonic() - waiting_since)
        return item

    def _credit_after(self, item: Item, waited: float) -> float:
        """The waiting time left to the client once `item` has come after `waited` s: all of the limit."""
        return self.idle_seconds

    def seconds_left(self) -> float:
        """Until the limit passes, if no item arrives meanwhile; 0 or less once it has. Only
        waiting for the client counts: while the server works on an item, the whole credit is
        left (ask again then), and once the stream has ended, infinitely much."""
        if self._ended:
            return math.inf
        waiting_since = self._waiting_since
        if waiting_since is None:
            return self._credit
        return self._credit - (time.monotonic() - waiting_since)

    def expire(self) -> BaseException:
        """Give the stream up: the error to raise, which the working side gets too."""
        self._expired = self._expiry_error()
        return self._expired

    def _expiry_error(self) -> BaseException:
        return IdleTimeout(self.idle_seconds)


def run_watching_idle(work: Callable[[Iterator[Item]], T], watched: WatchedItems[Item], thread_name: str) -> T:
    """`work(watched)`, run on a thread named `thread_name` (what it waits for, in thread dumps) while
    this thread waits for it; raises `watched.expire()` here once `watched` has run out of waiting
    time, unless its items have ended by then. `work` must keep nothing it needs after an error: it
    may still be running when this returns, until the call's end wakes it."""
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(work(watched))
        except BaseException as error:  # raised again in the calling thread
            outcome.set_exception(error)

    # The call's context goes along: what the work logs keeps the call's request id.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=thread_name, daemon=True)
    thread.start()
    while thread.is_alive():
        left = watched.seconds_left()
        if left <= 0:
            raise watched.expire()
        thread.join(None if math.isinf(left) else left)
    return outcome.result()
