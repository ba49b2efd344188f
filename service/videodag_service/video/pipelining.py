"""Overlap two stages of a run with a thread and a bounded hand-off between them.

Run one after the other, decoding a frame and running the pipeline on it add up; run in
two threads, the slower one sets the pace. A thread pays here because the heavy work
releases the GIL: OpenCV while it demuxes, decodes and converts a frame, numpy and most
plugins while they compute.

The hand-off holds at most `capacity` of items by weight (bytes of frames, say), but
always admits one item when empty, however heavy, so a single 4K frame still passes: a
slow consumer (a slow plugin, a slow client) stops the producer instead of letting items
pile up, so memory stays flat however long the video is.

`read_ahead` owns its thread: whichever way its block exits (end of data, an error on
either side, a closed generator), the thread has stopped when the block has exited, so
what it used (an OpenCV capture) can be released at once. The thread is frame work, so it
runs under the batch policy and gives way to the threads that serve calls (`scheduling`).
"""

from __future__ import annotations

import contextvars
import enum
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final, Generic, Literal, TypeVar

from videodag_service.scheduling import run_as_batch

T = TypeVar("T")

Weigher = Callable[[T], int]


def _one(_item: object) -> int:
    return 1


class HandoffClosed(Exception):
    """Raised to the producer when the consumer has gone away; it should stop producing."""


class HandoffEnd(enum.Enum):
    """The type of `BoundedHandoff.done`: a value of its own, so that `get` is typed "an item, or done"."""

    DONE = "done"


class BoundedHandoff(Generic[T]):
    """A FIFO between one producer thread and one consumer thread, bounded by total weight.

    The producer calls `put` (blocks while full) and then `finish`, with the error that
    stopped it if any; the consumer calls `get` (blocks while empty) until it returns
    `done`, then re-raises nothing itself: `get` raises the producer's error, after the
    items produced before it. Either side may `close`, which wakes the other: a producer
    blocked in `put` gets `HandoffClosed`, a consumer blocked in `get` gets `done`.
    """

    done: Final = HandoffEnd.DONE
    """Returned by `get` once the producer finished and every item was taken."""

    def __init__(self, capacity: int, weigh: Weigher[T] = _one) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._weigh = weigh
        self._items: deque[tuple[T, int]] = deque()
        self._weight = 0
        self._finished = False
        self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    def put(self, item: T) -> None:
        """Add an item, waiting while the hand-off is full; raises HandoffClosed once closed."""
        weight = self._weigh(item)
        with self._changed:
            while self._items and self._weight + weight > self.capacity and not self._closed:
                self._changed.wait()
            if self._closed:
                raise HandoffClosed
            self._items.append((item, weight))
            self._weight += weight
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The producer is done; `error` (if any) reaches the consumer after the items before it."""
        with self._changed:
            self._finished = True
            self._error = error
            self._changed.notify_all()

    def get(self) -> T | Literal[HandoffEnd.DONE]:
        """The next item, waiting while empty; `done` at the end; raises the producer's error."""
        with self._changed:
            while not self._items and not self._finished and not self._closed:
                self._changed.wait()
            if self._items:
                item, weight = self._items.popleft()
                self._weight -= weight
                self._changed.notify_all()
                return item
            if self._error is not None and not self._closed:
                error, self._error = self._error, None
                raise error
            return self.done

    def ready(self) -> bool:
        """Whether `get` would return without waiting: an item is held, or the producer is done."""
        with self._changed:
            return bool(self._items) or self._finished or self._closed

    def close(self) -> None:
        """Stop the hand-off from either side: drop what it holds and wake both sides."""
        with self._changed:
            self._closed = True
            self._items.clear()
            self._weight = 0
            self._changed.notify_all()

    @property
    def weight(self) -> int:
        """The total weight held now (for tests and metrics)."""
        with self._changed:
            return self._weight


@contextmanager
def read_ahead(
    source: Iterable[T], capacity: int, *, weigh: Weigher[T] = _one, thread_name: str
) -> Iterator[Drain[T]]:
    """Iterate `source` in a thread, up to `capacity` (by weight) ahead of the caller.

    Yields an iterator of the same items in the same order, whose `ready()` says whether the
    next one is already there; an exception raised by the source is raised by that iterator
    where it happened, after the items before it. On exit
    the thread is stopped and joined, and the source is closed in that thread (a generator's
    `finally` runs there), before the block exits.

    The join has no timeout on purpose: the thread is at most one source step away from
    noticing the stop (one grab or retrieve, milliseconds), and releasing what the source
    uses while that step still runs would free memory a native library is reading.
    """
    handoff: BoundedHandoff[T] = BoundedHandoff(capacity, weigh)
    iterator = iter(source)

    def produce() -> None:
        run_as_batch()
        error: BaseException | None = None
        try:
            try:
                for item in iterator:
                    handoff.put(item)
            finally:
                _close_source(iterator)
        except HandoffClosed:
            pass
        except BaseException as caught:  # delivered to the consumer, who decides
            error = caught
        handoff.finish(error)

    # The caller's context goes along: what the source logs, and the decoder process it may
    # start, keep the call's request id.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(produce,), name=thread_name, daemon=True)
    thread.start()
    try:
        yield Drain(handoff)
    finally:
        handoff.close()
        thread.join()


class Drain(Iterator[T]):
    """The consumer's side of a hand-off: an iterator that can also say, without waiting,
    whether its next item is there (a pipeline fills idle workers only with frames decoded
    already, so no finished result waits for a frame still being decoded)."""

    def __init__(self, handoff: BoundedHandoff[T]) -> None:
        self._handoff = handoff

    def __next__(self) -> T:
        item = self._handoff.get()
        if item is BoundedHandoff.done:
            raise StopIteration
        return item

    def ready(self) -> bool:
        """Whether `next` would return (or end) without waiting for the producer."""
        return self._handoff.ready()


def _close_source(iterator: Iterator[object]) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()
