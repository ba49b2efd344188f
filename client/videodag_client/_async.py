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
import os
import threading
import weakref
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias, TypeVar

import grpc

from videodag_client._arguments import job_states
from videodag_client._async_sources import chunks_in_loop
from videodag_client._async_streams import ABANDONED_STEP_WAIT_SECONDS, AsyncJobWatch, AsyncRunStream, ThreadedStream
from videodag_client._client import DEFAULT_TARGET, PICKLING_REFUSED, VideodagClient
from videodag_client._errors import VideodagError, client_closed_error
from videodag_client._job_values import Job, JobPage, JobState
from videodag_client._jobs import JobSubmission, start_job_submission
from videodag_client._loop_callback import LoopCallback
from videodag_client._options import RunOptions
from videodag_client._pipelines import PipelineInfo
from videodag_client._upload import DEFAULT_CHUNK_SIZE, PathOrFile, UploadAbandoned, upload_abandoned

R = TypeVar("R")
S = TypeVar("S", bound="ThreadedStream[Any]")
# Threads for the calls that answer once (pipelines, job lookups, a job's upload); streams
# wait on threads of their own.
_CALL_THREADS = 8
# A progress or reconnect callback here may be a function or a coroutine function (awaited in the loop).
AsyncUploadProgress: TypeAlias = Callable[[int, int | None], object]


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
        self._start_threads()
        # Closing the client cancels these itself: a channel the client does not own stays open,
        # so closing it would not end them.
        self._streams: weakref.WeakSet[ThreadedStream[Any]] = weakref.WeakSet()
        self._calls_closed = False

    def __reduce__(self) -> Any:
        raise TypeError(PICKLING_REFUSED)

    def __copy__(self) -> AsyncVideodagClient:
        """The same client, as `VideodagClient.__copy__` says why."""
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncVideodagClient:
        return self

    def _start_threads(self) -> None:
        self._threads_pid = os.getpid()
        self._calls = ThreadPoolExecutor(max_workers=_CALL_THREADS, thread_name_prefix="async-client-call")
        # Starting a submission reads the whole file for its checksum: seconds for a long video,
        # which on the calls' threads would hold up every lookup behind a few submissions.
        self._submissions = ThreadPoolExecutor(max_workers=_CALL_THREADS, thread_name_prefix="async-client-submit")

    def _threads_of_this_process(self) -> None:
        """A forked child (a pre-fork server's worker, multiprocessing's fork) inherits the pools
        with the parent's count of idle threads, none of which it has: its first lookup and its
        first submission would start no thread and wait until some other call came. It makes its own."""
        if os.getpid() != self._threads_pid:
            self._start_threads()

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
        path_or_file: PathOrFile | AsyncIterable[bytes],
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

        `path_or_file` takes what `VideodagClient.upload_and_run` does, and an async iterable
        of the video's chunks (a request body's `request.stream()` in FastAPI, an aiohttp
        `StreamReader`), read in this event loop as the upload goes, never whole: this method
        is then called in that loop (outside one, asyncio's RuntimeError comes at once).

        Nothing starts until the first `async for` step, which opens the file (and reads it
        once for its checksum) on the stream's thread; errors, bad arguments included, are
        raised from the iteration. `on_upload_progress` (a function or a coroutine function) is
        called in the event loop, without holding each chunk back (the upload waits for its
        reports once, before it ends, and for their coroutines up to 10 s); an exception it
        raises stops the call at its next chunk or event and is raised from the iteration, as
        `VideodagClient` raises its callback's.
        """
        progress = LoopCallback.of(on_upload_progress)
        start = functools.partial(
            self._client.upload_and_run,
            chunks_in_loop(path_or_file),
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
        path_or_file: PathOrFile | AsyncIterable[bytes],
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
        """Uploads a video and queues a job: `VideodagClient.submit_job`, awaited; `path_or_file`
        as in `upload_and_run`, an async iterable of chunks included.

        Cancelling the awaiting task cancels the upload, and no job is queued for it
        (unless the server had already stored the whole upload). `on_upload_progress` runs
        as in `upload_and_run`; its exception stops the upload at the next chunk and is raised
        from here. The upload waits for its reports to have run before it ends (for their
        coroutines, up to 10 s), so one that raised queues no job, even when the loop ran it
        after the last chunk was read. A coroutine that fails later, once the job is queued,
        goes to the event loop's exception handler: the job is returned.
        """
        progress = LoopCallback.of(on_upload_progress)
        if progress is not None:
            progress.loop = asyncio.get_running_loop()
        if self._calls_closed:  # its threads are gone: say so as the blocking client does
            raise client_closed_error()
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        start = functools.partial(
            self._unless_closed,
            _start_unless_abandoned,
            lambda: abandoned.is_set() or self._calls_closed,
            self._client,
            chunks_in_loop(path_or_file),
            pipeline_id,
            options,
            idempotency_key=idempotency_key,
            chunk_size=chunk_size,
            declare_size=declare_size,
            checksum=checksum,
            timeout=timeout,
            on_upload_progress=progress,
        )
        self._threads_of_this_process()
        starting = loop.run_in_executor(self._submissions, start)
        try:
            # Shielded: a cancel stops the checksum pass, or cancels the call should it start anyway.
            submitting = await asyncio.shield(starting)
        except asyncio.CancelledError:
            abandoned.set()
            starting.add_done_callback(_cancel_if_started)
            # The checksum pass stops at its next read and puts the file back: a retry with the same
            # file object, once this returns, must not meet it halfway.
            await asyncio.wait({starting}, timeout=ABANDONED_STEP_WAIT_SECONDS)
            raise
        except UploadAbandoned:  # the client closed during the checksum pass
            raise client_closed_error() from None
        # Waited for without a thread: the upload runs on gRPC's own.
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
        page_token: str | None = "",
        timeout: float | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, only those in `states` (all when empty); the first
        page for a `page_token` of "" or None, else the page `next_page_token` named."""
        return await self._run(
            self._client.list_jobs, states=job_states(states), page_size=page_size, page_token=page_token,
            timeout=timeout,
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
        reconnected = LoopCallback.of(on_reconnect)
        start = functools.partial(
            self._client.watch_job,
            job_id,
            after_frame_index=after_frame_index,
            reconnect_window=reconnect_window,
            on_reconnect=reconnected,
        )
        return self._track(AsyncJobWatch(start, "async-client-watch", reconnected))

    async def _run(self, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        self._threads_of_this_process()
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


def _start_unless_abandoned(abandoned: Callable[[], bool], *args: Any, **kwargs: Any) -> JobSubmission:
    """`start_job_submission`, its checksum pass stopped once `abandoned()` (`upload_abandoned`)."""
    abandoning = upload_abandoned.set(abandoned)
    try:
        return start_job_submission(*args, **kwargs)
    finally:
        upload_abandoned.reset(abandoning)


def _cancel_if_started(starting: asyncio.Future[JobSubmission]) -> None:
    """For a submission its caller gave up on while it started: its upload, if it began, stops."""
    if not starting.cancelled() and starting.exception() is None:
        starting.result().cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
