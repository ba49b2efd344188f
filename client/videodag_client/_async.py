"""The client for asyncio code: `VideodagClient`'s calls as coroutines and async iterators.

A service built on asyncio (FastAPI, aiohttp, ...) awaits these without blocking its event
loop: every gRPC call, and every file read, runs on a thread. That is why this is a facade
over the blocking client rather than a grpc.aio client: grpc.aio reports `INTERNAL:
Internal error from Core` instead of the server's status when the server ends a call while
the client is still uploading (grpc/grpc#36066), which is exactly how videodag refuses an
unknown pipeline or an upload over a limit. The blocking client reports those correctly,
and so the same events, jobs and typed errors arrive here.

Each running stream (`upload_and_run`, `watch_job`) waits for its next event on a thread of
its own, so any number of them can be open at once without starving each other or the
event loop's default executor. Cancelling the task that awaits a stream cancels its call.

    async with AsyncVideodagClient("localhost:50051") as client:
        async for event in client.upload_and_run("clip.mp4", "player_tracking_v1"):
            print(event)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import grpc

from videodag_client._client import DEFAULT_TARGET, VideodagClient
from videodag_client._errors import Cancelled, VideodagError, client_closed_error
from videodag_client._events import Event
from videodag_client._jobs import Job, JobEvent, JobPage, JobState
from videodag_client._options import RunOptions
from videodag_client._pipelines import PipelineInfo
from videodag_client._upload import DEFAULT_CHUNK_SIZE, DeferredProgress, PathOrFile

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")
S = TypeVar("S", bound="_ThreadedStream[Any]")
# Threads for the calls that answer once (pipelines, job lookups, a job's upload); streams
# wait on threads of their own.
_CALL_THREADS = 8
_END = object()
_LOOP_CHECK_SECONDS = 0.05  # how often an upload waiting for its callbacks checks that their loop still runs
# A progress or reconnect callback here may be a function or a coroutine function (awaited in the loop).
AsyncUploadProgress: TypeAlias = Callable[[int, int | None], object]
# How long an upload's end waits for the coroutines its progress reports returned: well under
# the server's upload idle limit (60 s by default), which a longer silence would trip.
_COROUTINES_WAIT_SECONDS = 10.0
_CLOSED_CALL_CALLBACK_FAILED = "a callback of a finished or closed call failed"


class AsyncVideodagClient(AbstractAsyncContextManager["AsyncVideodagClient"]):
    """A connection to one videodag server for asyncio code; failures raise `VideodagError` subclasses.

    The arguments are those of `VideodagClient`. `close()` (or leaving `async with`)
    cancels the streams still running (`upload_and_run`, `watch_job`) and closes the client;
    later calls raise `FailedPrecondition` (reason `CLIENT_CLOSED`). A client wrapped with
    `from_client` behaves the same, though the channel of a `VideodagClient.from_channel`
    stays open for its owner.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._setup(VideodagClient(
            target, credentials=credentials, token=token, timeout=timeout, channel_options=channel_options
        ))

    @classmethod
    def from_client(cls, client: VideodagClient) -> AsyncVideodagClient:
        """Wraps a blocking client the caller built (with `VideodagClient.from_channel`, for
        interceptors or custom channel options); closing this one closes that one, and cancels
        this one's streams."""
        wrapper = cls.__new__(cls)
        wrapper._setup(client)
        return wrapper

    def _setup(self, client: VideodagClient) -> None:
        self._client = client
        self._calls = ThreadPoolExecutor(max_workers=_CALL_THREADS, thread_name_prefix="async-client-call")
        # Starting a submission reads the whole file for its checksum: seconds for a long video,
        # which on the calls' threads would hold up every lookup behind a few submissions.
        self._submissions = ThreadPoolExecutor(max_workers=_CALL_THREADS, thread_name_prefix="async-client-submit")
        # Closing the client cancels these itself: a channel the client does not own stays open,
        # so closing it would not end them.
        self._streams: weakref.WeakSet[_ThreadedStream[Any]] = weakref.WeakSet()
        self._calls_closed = False

    async def close(self) -> None:
        """Cancels the running streams, then closes the client.

        A stream it cancels raises `FailedPrecondition` (reason `CLIENT_CLOSED`) from its
        next step, as a call still waiting for a thread does, rather than end as if finished.
        """
        for stream in list(self._streams):
            stream.cancel(client_closed_error())
        self._client.close()
        self._calls_closed = True
        # Not cancel_futures: a cancelled future would reach its awaiting task as
        # asyncio.CancelledError, which asyncio takes for the task's own cancellation.
        self._calls.shutdown(wait=False)
        self._submissions.shutdown(wait=False)

    def _track(self, stream: S) -> S:
        self._streams.add(stream)
        return stream

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def list_pipelines(self, *, timeout: float | None = None) -> list[PipelineInfo]:
        """Every pipeline the server runs, sorted by id."""
        return await self._run(self._client.list_pipelines, timeout=timeout)

    async def get_pipeline(self, pipeline_id: str, *, timeout: float | None = None) -> PipelineInfo:
        """One pipeline with its node graph; raises `NotFound` for an unknown id."""
        return await self._run(self._client.get_pipeline, pipeline_id, timeout=timeout)

    def upload_and_run(
        self,
        path_or_file: PathOrFile,
        pipeline_id: str,
        options: RunOptions | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        declare_size: bool = True,
        checksum: bool = True,
        decode_during_upload: bool = False,
        timeout: float | None = None,
        on_upload_progress: AsyncUploadProgress | None = None,
    ) -> AsyncRunStream:
        """Uploads a video and runs a pipeline on it: `VideodagClient.upload_and_run`, awaited.

        Nothing starts until the first `async for` step, which opens the file (and reads it
        once for its checksum) on the stream's thread; errors, bad arguments included, are
        raised from the iteration. `on_upload_progress` (a function or a coroutine function) is
        called in the event loop, without holding each chunk back (the upload waits for its
        reports once, before it ends, and for their coroutines up to 10 s); an exception it
        raises stops the call at its next chunk or event and is raised from the iteration, as
        `VideodagClient` raises its callback's.
        """
        progress = _LoopCallback.of(on_upload_progress)
        start = functools.partial(
            self._client.upload_and_run,
            path_or_file,
            pipeline_id,
            options,
            chunk_size=chunk_size,
            declare_size=declare_size,
            checksum=checksum,
            decode_during_upload=decode_during_upload,
            timeout=timeout,
            on_upload_progress=progress,
        )
        return self._track(AsyncRunStream(start, "async-client-run", progress))

    async def submit_job(
        self,
        path_or_file: PathOrFile,
        pipeline_id: str,
        options: RunOptions | None = None,
        *,
        idempotency_key: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        declare_size: bool = True,
        checksum: bool = True,
        timeout: float | None = None,
        on_upload_progress: AsyncUploadProgress | None = None,
    ) -> Job:
        """Uploads a video and queues a job: `VideodagClient.submit_job`, awaited.

        Cancelling the awaiting task cancels the upload, and no job is queued for it
        (unless the server had already stored the whole upload). `on_upload_progress` runs
        as in `upload_and_run`; its exception stops the upload at the next chunk and is raised
        from here. The upload waits for its reports to have run before it ends (for their
        coroutines, up to 10 s), so one that raised queues no job, even when the loop ran it
        after the last chunk was read. A coroutine that fails later, once the job is queued,
        goes to the event loop's exception handler: the job is returned.
        """
        progress = _LoopCallback.of(on_upload_progress)
        if progress is not None:
            progress.loop = asyncio.get_running_loop()
        submitting = await self._run_on(
            self._submissions,
            self._client._start_job_submission,
            path_or_file,
            pipeline_id,
            options,
            idempotency_key=idempotency_key,
            chunk_size=chunk_size,
            declare_size=declare_size,
            checksum=checksum,
            timeout=timeout,
            on_upload_progress=progress,
        )
        # Waited for without a thread: the upload runs on gRPC's own.
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        submitting.add_done_callback(lambda: loop.call_soon_threadsafe(_resolve, ended))
        try:
            await ended
        except asyncio.CancelledError:
            submitting.cancel()
            raise
        job = submitting.result()
        if progress is not None:
            # The upload waited for its reports, so one that failed in time stopped the call.
            # One that fails now is the job's business no more: raising would lose the job.
            progress.hand_failures_to_loop(f"an upload progress callback failed after job {job.id} was queued")
        return job

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job as it is now; `NotFound` for an unknown or deleted id."""
        return await self._run(self._client.get_job, job_id, timeout=timeout)

    async def list_jobs(
        self,
        *,
        states: Iterable[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, only those in `states` (all when empty)."""
        return await self._run(
            self._client.list_jobs, states=tuple(states), page_size=page_size, page_token=page_token, timeout=timeout
        )

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancels a queued or running job and returns it CANCELLED; `FailedPrecondition` if it finished."""
        return await self._run(self._client.cancel_job, job_id, timeout=timeout)

    async def delete_job(self, job_id: str, *, timeout: float | None = None) -> None:
        """Deletes a finished job and its results; `FailedPrecondition` while it is queued or running."""
        await self._run(self._client.delete_job, job_id, timeout=timeout)

    def watch_job(
        self,
        job_id: str,
        *,
        after_frame_index: int | None = None,
        reconnect_window: float = 60.0,
        on_reconnect: Callable[[VideodagError, int | None], object] | None = None,
    ) -> AsyncJobWatch:
        """Follows a job until it is finished: `VideodagClient.watch_job` as an async iterator,
        reconnecting the same way. `on_reconnect` is called in the event loop; an exception
        it raises ends the watch and is raised from the iteration."""
        reconnected = _LoopCallback.of(on_reconnect)
        start = functools.partial(
            self._client.watch_job,
            job_id,
            after_frame_index=after_frame_index,
            reconnect_window=reconnect_window,
            on_reconnect=reconnected,
        )
        return self._track(AsyncJobWatch(start, "async-client-watch", reconnected))

    async def _run(self, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        return await self._run_on(self._calls, function, *args, **kwargs)

    async def _run_on(self, threads: ThreadPoolExecutor, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        if self._calls_closed:  # its threads are gone: say so as the blocking client does
            raise client_closed_error()
        loop = asyncio.get_running_loop()
        call = functools.partial(self._unless_closed, function, *args, **kwargs)
        return await loop.run_in_executor(threads, call)

    def _unless_closed(self, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """A call still waiting for a thread when the client closed raises as a later call does."""
        if self._calls_closed:
            raise client_closed_error()
        return function(*args, **kwargs)


class _BlockingStream(Iterator[T_co], Protocol):
    """What `_ThreadedStream` wraps: `RunStream` or `JobWatch`, whose `close` any thread may call."""

    def close(self) -> None: ...


class _ThreadedStream(AbstractAsyncContextManager["_ThreadedStream[T]"], Generic[T]):
    """An async iterator over a blocking one (`RunStream`, `JobWatch`) that `start` opens on
    first use, each `next()` on a thread kept for this stream."""

    def __init__(
        self, start: Callable[[], _BlockingStream[T]], thread_name: str, callback: _LoopCallback | None = None
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

    def __aiter__(self) -> _ThreadedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            self._raise_if_cut_short()
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._callback is not None:
            self._callback.loop = loop  # the loop iterating now, should the stream change loops
        try:
            item = await loop.run_in_executor(self._thread, self._next)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:  # not this task's own cancellation
                self.cancel()
                raise Cancelled("the call was cancelled: the wait for its next event was cancelled") from None
            # The awaiting task was cancelled (by the caller, or by wait_for's timeout): the call goes.
            if self._cut_short is None:
                self._cut_short = Cancelled("the call was cancelled: the task waiting for its next event was cancelled")
            self.cancel()
            raise
        except BaseException as error:
            # The call's error: the call goes too, which also ends the wait on the thread.
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
        return item  # type: ignore[return-value]

    def _raise_if_cut_short(self) -> None:
        if self._cut_short is not None:
            raise self._cut_short.with_traceback(None)

    def _next(self) -> object:
        if self._closed:
            return _END
        if self._stream is None:
            self._stream = self._start()
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


class AsyncRunStream(_ThreadedStream[Event], AsyncIterator[Event]):
    """The events of one UploadAndRun call (`RunStream`'s), as an async iterator.

    `aclose()` (or leaving its `async with` block) cancels the call if it is still running.
    """


class AsyncJobWatch(_ThreadedStream[JobEvent], AsyncIterator[JobEvent]):
    """The events of one job (`JobWatch`'s), as an async iterator; `aclose()` stops it."""


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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _LoopCallback(DeferredProgress):
    """A caller's callback, called by the blocking client from its threads and run in the event
    loop instead, without waiting for it: the upload is not held back by a busy loop, nor stuck
    behind one that has stopped. An exception it raises (or its coroutine's) is kept, and
    raised in the blocking client's thread at its next call, which stops the call as the
    blocking client's own callback would; the async side raises it at its next step too.

    An upload waits for its reports once, before it ends (`wait_until_run`), while the loop
    runs: a report the loop ran only after the last chunk left would otherwise fail a call
    the server had already taken whole (a job queued). The coroutines they returned are
    waited for up to `_COROUTINES_WAIT_SECONDS`; one still running then raises, if it does,
    from the call's next step, as before.
    """

    def __init__(self, callback: Callable[..., object]) -> None:
        self._callback = callback
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop to run it in: the one iterating the stream (set at each step) or awaiting the call."""
        self._error: BaseException | None = None
        self._running: set[asyncio.Future[Any]] = set()  # coroutines it returned, until they end
        self._late_failure_message: str | None = None  # set once its call is over (`hand_failures_to_loop`)

    @classmethod
    def of(cls, callback: Callable[..., object] | None) -> _LoopCallback | None:
        return None if callback is None else cls(callback)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

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
        if not running.cancelled() and running.exception() is not None:
            self._fail(running.exception())  # type: ignore[arg-type]

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
