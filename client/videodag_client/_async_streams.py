"""The async iterators `AsyncVideodagClient` returns for its streams: `AsyncRunStream`, `AsyncJobWatch`.

Each wraps a blocking stream (`RunStream`, `JobWatch`), opened on first use and stepped on a
thread kept for it; cancelling the awaiting task, or closing the client, cancels the call.
Apart from the client, which only starts them and keeps track of those still running.
"""

from __future__ import annotations

import asyncio
import enum
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, Literal, Protocol, Self, TypeVar, cast

from videodag_client._errors import Cancelled, VideodagError
from videodag_client._events import Event
from videodag_client._job_values import Job, JobEvent
from videodag_client._job_watch import JobWatch
from videodag_client._loop_callback import LoopCallback
from videodag_client._upload import upload_abandoned

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _End(enum.Enum):
    """What a step returns at the stream's end: a value of its own, so that a step is typed "an event, or the end"."""

    END = "end"


_END: Final = _End.END
_CLOSED_CALL_CALLBACK_FAILED = "a callback of a finished or closed call failed"
ABANDONED_STEP_WAIT_SECONDS = 10.0
"""How long a cancelled call's caller waits for the call's step under way to end (a checksum
pass stops at its next read): long enough for a slow share's read, not for a hung one."""


class _BlockingStream(Iterator[T_co], Protocol):
    """What `ThreadedStream` wraps: `RunStream` or `JobWatch`, whose `close` any thread may call."""

    def close(self) -> None: ...


class ThreadedStream(AbstractAsyncContextManager["ThreadedStream[T]"], Generic[T]):
    """An async iterator over a blocking one (`RunStream`, `JobWatch`) that `start` opens on
    first use, each `next()` on a thread kept for this stream."""

    def __init__(
        self, start: Callable[[], _BlockingStream[T]], thread_name: str, callback: LoopCallback | None = None
    ) -> None:
        self._start = start
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._stream: _BlockingStream[T] | None = None
        self._closed = False
        # Why a stream ended before its last event, for every later step: one that only
        # stopped would look finished (a run without its summary, a watch without its job).
        self._cut_short: VideodagError | None = None
        self._callback = callback
        if callback is not None:  # a stream left behind (`break`) without aclose(): nothing will raise them either
            weakref.finalize(self, callback.hand_failures_to_loop, _CLOSED_CALL_CALLBACK_FAILED)

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        """The stream itself, typed as its own class: `async with client.watch_job(...) as watch`
        then reads `watch.last_frame_index` in type-checked code."""
        return self

    async def __anext__(self) -> T:
        if self._closed:
            self._raise_if_cut_short()
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._callback is not None:
            self._callback.loop = loop  # the loop iterating now, should the stream change loops
        step = self._thread.submit(self._next)
        try:
            item = await asyncio.wrap_future(step, loop=loop)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:  # not this task's own cancellation
                self.cancel()
                raise Cancelled("the call was cancelled: the wait for its next event was cancelled") from None
            # The awaiting task was cancelled (by the caller, or by wait_for's timeout): the call goes.
            if self._cut_short is None:
                self._cut_short = Cancelled("the call was cancelled: the task waiting for its next event was cancelled")
            self.cancel()
            await _ended(step)  # a checksum pass under way puts the caller's file back first
            raise
        except BaseException as error:
            # The call's error: the call goes too, which also ends the wait on the thread.
            if self._callback is not None:
                self._callback.raised(error)
            await self.aclose()
            if self._cut_short is not None and isinstance(error, VideodagError):
                raise self._cut_short.with_traceback(None) from error  # the client closed: gRPC's CANCELLED says less
            raise
        if self._callback is not None and item is _END:
            await self._callback.settled()  # a failure of its last call is raised, not lost
        if self._callback is not None and (failure := self._callback.take_failure()) is not None:
            await self.aclose()
            raise failure
        if self._callback is not None and item is _END:
            # A coroutine still running past the wait no longer holds the caller's loop: its
            # failure, if it comes, is logged, as after a job's upload.
            self._callback.hand_failures_to_loop(_CLOSED_CALL_CALLBACK_FAILED)
        if item is _END:
            await self.aclose()
            self._raise_if_cut_short()
            raise StopAsyncIteration
        return item

    def _raise_if_cut_short(self) -> None:
        if self._cut_short is not None:
            raise self._cut_short.with_traceback(None)

    def _next(self) -> T | Literal[_End.END]:
        if self._closed:
            return _END
        if self._stream is None:
            abandoning = upload_abandoned.set(lambda: self._closed)  # a cancel stops the checksum pass
            try:
                self._stream = self._start()
            finally:
                upload_abandoned.reset(abandoning)
            if self._closed:  # closed while it started: `aclose` may not have seen the stream
                self._close_stream()
                return _END
        return next(self._stream, _END)

    async def aclose(self) -> None:
        """Cancels the call if it is still running; later iteration stops at once."""
        self.cancel()

    def cancel(self, why: VideodagError | None = None) -> None:
        """`aclose` without awaiting, from the event loop's thread; with `why` (the client's
        `close`), a stream not ended yet raises it from its next step instead of stopping."""
        if why is not None and not self._closed and self._cut_short is None:
            self._cut_short = why
        self._closed = True
        self._close_stream()
        self._thread.shutdown(wait=False)
        if self._callback is not None:  # nothing will raise a failure of theirs from here on
            self._callback.hand_failures_to_loop(_CLOSED_CALL_CALLBACK_FAILED)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()  # both blocking streams' `close` may be called again and from any thread

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncRunStream(ThreadedStream[Event], AsyncIterator[Event]):
    """The events of one UploadAndRun call (`RunStream`'s), as an async iterator.

    `aclose()` (or leaving its `async with` block) cancels the call if it is still running.
    """


async def _ended(step: Future[Any], timeout: float = ABANDONED_STEP_WAIT_SECONDS) -> None:
    """Once the step the stream's thread is running has ended (a cancelled call's ends at once,
    a checksum pass at its next read), or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while not step.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


class AsyncJobWatch(ThreadedStream[JobEvent], AsyncIterator[JobEvent]):
    """The events of one job (`JobWatch`'s), as an async iterator; `aclose()` stops it.

    `last_frame_index`, `job` and `reconnects` are the `JobWatch`'s once the watch has started
    (its first step): the resume point, the latest job state seen, and how many times the
    connection was re-established."""

    @property
    def last_frame_index(self) -> int | None:
        return None if self._watch is None else self._watch.last_frame_index

    @property
    def job(self) -> Job | None:
        return None if self._watch is None else self._watch.job

    @property
    def reconnects(self) -> int:
        return 0 if self._watch is None else self._watch.reconnects

    @property
    def _watch(self) -> JobWatch | None:
        return cast("JobWatch | None", self._stream)
