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
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Protocol, TypeVar

import grpc

from videodag_client._client import DEFAULT_TARGET, VideodagClient, client_closed_error
from videodag_client._errors import VideodagError
from videodag_client._events import Event
from videodag_client._jobs import Job, JobEvent, JobPage, JobState
from videodag_client._options import RunOptions
from videodag_client._pipelines import PipelineInfo
from videodag_client._upload import DEFAULT_CHUNK_SIZE, PathOrFile, UploadProgress

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")
S = TypeVar("S", bound="_ThreadedStream[Any]")
# Threads for the calls that answer once (pipelines, job lookups, a job's upload); streams
# wait on threads of their own.
_CALL_THREADS = 8
_END = object()


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
        # Closing the client cancels these itself: a channel the client does not own stays open,
        # so closing it would not end them.
        self._streams: weakref.WeakSet[_ThreadedStream[Any]] = weakref.WeakSet()
        self._calls_closed = False

    async def close(self) -> None:
        """Cancels the running streams, then closes the client."""
        for stream in list(self._streams):
            stream.cancel()
        self._client.close()
        self._calls_closed = True
        self._calls.shutdown(wait=False, cancel_futures=True)

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
        on_upload_progress: UploadProgress | None = None,
    ) -> AsyncRunStream:
        """Uploads a video and runs a pipeline on it: `VideodagClient.upload_and_run`, awaited.

        Nothing starts until the first `async for` step, which opens the file (and reads it
        once for its checksum) on the stream's thread; errors, bad arguments included, are
        raised from the iteration. `on_upload_progress` is called in the event loop.
        """
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
            on_upload_progress=_in_loop(on_upload_progress),
        )
        return self._track(AsyncRunStream(start, "async-client-run"))

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
        on_upload_progress: UploadProgress | None = None,
    ) -> Job:
        """Uploads a video and queues a job: `VideodagClient.submit_job`, awaited.

        Cancelling the awaiting task cancels the upload, and no job is queued for it
        (unless the server had already stored the whole upload).
        """
        submitting = await self._run(
            self._client._start_job_submission,
            path_or_file,
            pipeline_id,
            options,
            idempotency_key=idempotency_key,
            chunk_size=chunk_size,
            declare_size=declare_size,
            checksum=checksum,
            timeout=timeout,
            on_upload_progress=_in_loop(on_upload_progress),
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
        return submitting.result()

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
        on_reconnect: Callable[[VideodagError, int | None], None] | None = None,
    ) -> AsyncJobWatch:
        """Follows a job until it is finished: `VideodagClient.watch_job` as an async iterator,
        reconnecting the same way. `on_reconnect` is called in the event loop."""
        start = functools.partial(
            self._client.watch_job,
            job_id,
            after_frame_index=after_frame_index,
            reconnect_window=reconnect_window,
            on_reconnect=_in_loop(on_reconnect),
        )
        return self._track(AsyncJobWatch(start, "async-client-watch"))

    async def _run(self, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        if self._calls_closed:  # its threads are gone: say so as the blocking client does
            raise client_closed_error()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, functools.partial(function, *args, **kwargs))


class _BlockingStream(Iterator[T_co], Protocol):
    """What `_ThreadedStream` wraps: `RunStream` or `JobWatch`, whose `close` any thread may call."""

    def close(self) -> None: ...


class _ThreadedStream(AbstractAsyncContextManager["_ThreadedStream[T]"], Generic[T]):
    """An async iterator over a blocking one (`RunStream`, `JobWatch`) that `start` opens on
    first use, each `next()` on a thread kept for this stream."""

    def __init__(self, start: Callable[[], _BlockingStream[T]], thread_name: str) -> None:
        self._start = start
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._stream: _BlockingStream[T] | None = None
        self._closed = False

    def __aiter__(self) -> _ThreadedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            item = await loop.run_in_executor(self._thread, self._next)
        except BaseException:
            # The call's error, or the awaiting task cancelled (CancelledError): the call goes
            # too, which also ends the wait on the thread.
            await self.aclose()
            raise
        if item is _END:
            await self.aclose()
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

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

    def cancel(self) -> None:
        """`aclose` without awaiting: for the client's `close`, from the event loop's thread."""
        self._closed = True
        self._close_stream()
        self._thread.shutdown(wait=False)

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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _in_loop(callback: Callable[..., None] | None) -> Callable[..., None] | None:
    """`callback`, called from any thread, made to run in the running event loop instead."""
    if callback is None:
        return None
    loop = asyncio.get_running_loop()

    def call_in_loop(*args: Any) -> None:
        loop.call_soon_threadsafe(callback, *args)

    return call_in_loop
