"""Jobs from the client side: submit a video, then get, list, cancel, delete or watch its job.

`JobCalls` holds the six job calls; `VideodagClient` inherits it. `watch_job` returns a
`JobWatch`, which reconnects by itself when the connection drops (or the server restarts)
and resumes after the last frame it delivered, so a caller sees every frame result once.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2

from videodag.v1 import job_pb2, run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client._errors import Cancelled, VideodagError, client_closed_error, error_from_status, from_grpc_error
from videodag_client._events import (
    FrameResult,
    RunSummary,
    VideoOpened,
    frame_result_from_proto,
    run_summary_from_proto,
    seconds_of,
    video_opened_from_proto,
)
from videodag_client._options import RunOptions, unsendable
from videodag_client._upload import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    ChunkedRequests,
    PathOrFile,
    UploadProgress,
    describe_upload,
    open_upload,
    run_config,
)
from videodag_client._wire import bytes_field_encoder

_encode_job_chunk = bytes_field_encoder(video_pipeline_service_pb2.SubmitJobRequest, "chunk")
# A dropped connection or a restarting server: the watch is resumed, not failed.
_RECONNECTABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# A server already streaming its maximum of watches refuses more with RESOURCE_EXHAUSTED and
# says when to try again (RetryInfo): a slot frees when some watched job ends.
_WATCHES_FULL = "TOO_MANY_WATCHES"
_FIRST_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0


class JobState(enum.Enum):
    """Where a job is in its life: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED."""

    QUEUED = job_pb2.JOB_STATE_QUEUED
    RUNNING = job_pb2.JOB_STATE_RUNNING
    SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
    FAILED = job_pb2.JOB_STATE_FAILED
    CANCELLED = job_pb2.JOB_STATE_CANCELLED

    @property
    def is_finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """A job as the server reported it; times are timezone-aware UTC datetimes."""

    id: str
    state: JobState
    pipeline_id: str
    options: RunOptions
    file_name: str
    size_bytes: int
    """Bytes of the stored upload."""
    sha256: str
    idempotency_key: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    expires_at: datetime | None
    """When the server deletes the finished job and its results."""
    frames_done: int
    frames_total: int
    """Expected frames (the container's count after sampling); 0 while unknown."""
    attempt: int
    """1, or more when a restart or a lost worker made the job run again from the start."""
    video: VideoOpened | None
    summary: RunSummary | None
    """Set when SUCCEEDED."""
    error: VideodagError | None = field(default=None, compare=False)
    """Set when FAILED: the exception the synchronous run would have raised."""


@dataclass(frozen=True)
class JobPage:
    """One page of `list_jobs`, newest first; pass `next_page_token` for the next ("" = last page)."""

    jobs: tuple[Job, ...]
    next_page_token: str


JobEvent: TypeAlias = Job | FrameResult
"""What a `JobWatch` yields: the job when its state or progress changed, or one frame's result."""


class JobCalls:
    """The job calls of `VideodagClient`; expects `_stub`, `_submit_job`, `_metadata`,
    `_deadline`, `_invoke`, `_check_open` (which refuse calls on a closed client), `_is_closed` and
    `_end_on_close` from it."""

    _stub: video_pipeline_service_pb2_grpc.VideoPipelineServiceStub
    _submit_job: grpc.StreamUnaryMultiCallable
    _metadata: tuple[tuple[str, str], ...]
    _deadline: Callable[[float | None], float | None]
    _invoke: Callable[..., Any]
    _check_open: Callable[[], None]
    _is_closed: Callable[[], bool]
    _end_on_close: Callable[[threading.Event], None]

    def submit_job(
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
        """Uploads a video and queues a job running `pipeline_id` on it; returns the QUEUED job.

        With `idempotency_key`, submitting again (after a timeout, say) returns the job the key
        was first used for instead of queuing the video twice. The other arguments are those
        of `upload_and_run`.
        """
        return self._start_job_submission(
            path_or_file, pipeline_id, options, idempotency_key=idempotency_key, chunk_size=chunk_size,
            declare_size=declare_size, checksum=checksum, timeout=timeout, on_upload_progress=on_upload_progress,
        ).result()

    def _start_job_submission(
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
    ) -> JobSubmission:
        """`submit_job` up to the call started, so that another thread can cancel it."""
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")
        self._check_open()
        config = video_pipeline_service_pb2.SubmitJobConfig(
            run_config=run_config(pipeline_id, options, "config.run_config."), idempotency_key=idempotency_key or ""
        )
        upload = open_upload(path_or_file, declare_size=declare_size, checksum=checksum)
        describe_upload(config.run_config, upload)
        chunked = ChunkedRequests(
            video_pipeline_service_pb2.SubmitJobRequest(config=config).SerializeToString(),
            _encode_job_chunk, upload, chunk_size, on_upload_progress,
        )
        try:
            call = self._invoke(
                self._submit_job.future, chunked, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except BaseException:
            chunked.close()
            raise
        return JobSubmission(call, chunked, self._is_closed)

    def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job as it is now; `NotFound` for an unknown or deleted id."""
        response = self._call(self._stub.GetJob, video_pipeline_service_pb2.GetJobRequest(job_id=job_id), timeout)
        return job_from_proto(response.job)

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, only those in `states` (all when empty)."""
        request = video_pipeline_service_pb2.ListJobsRequest(page_token=page_token,
                                                             states=[state.value for state in states])
        try:
            request.page_size = page_size
        except (ValueError, OverflowError):  # beyond 32 bits: raised as the server's own refusals are
            raise unsendable("page_size", "page_size", page_size) from None
        response = self._call(self._stub.ListJobs, request, timeout)
        return JobPage(tuple(job_from_proto(job) for job in response.jobs), response.next_page_token)

    def iter_jobs(self, *, states: Iterable[JobState] = (), page_size: int = 0) -> Iterator[Job]:
        """Every job, newest first, fetching pages as needed."""
        wanted = tuple(states)
        token = ""
        while True:
            page = self.list_jobs(states=wanted, page_size=page_size, page_token=token)
            yield from page.jobs
            if not page.next_page_token:
                return
            token = page.next_page_token

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancels a queued or running job and returns it CANCELLED; `FailedPrecondition` if it finished."""
        response = self._call(
            self._stub.CancelJob, video_pipeline_service_pb2.CancelJobRequest(job_id=job_id), timeout
        )
        return job_from_proto(response.job)

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> None:
        """Deletes a finished job and its results; `FailedPrecondition` while it is queued or running."""
        self._call(self._stub.DeleteJob, video_pipeline_service_pb2.DeleteJobRequest(job_id=job_id), timeout)

    def watch_job(
        self,
        job_id: str,
        *,
        after_frame_index: int | None = None,
        reconnect_window: float = 60.0,
        on_reconnect: Callable[[VideodagError, int | None], None] | None = None,
    ) -> JobWatch:
        """Follows a job until it is finished: `Job` updates and each `FrameResult` in frame order.

        The last event is always the `Job` in its final state; a finished job's results are
        replayed. `after_frame_index` resumes after a frame already received. When the
        connection drops, the watch reconnects and resumes after the last frame it delivered,
        for up to `reconnect_window` seconds of failed attempts in a row (0 disables it); a
        server that refuses the watch for having too many open (`TOO_MANY_WATCHES`) is asked
        again after the delay it gives. `on_reconnect(error, last_frame_index)` is called
        before each new attempt. A server that cannot be reached before the first response
        (a wrong address, a server down) is not waited for: `Unavailable` is raised at once.
        The client's default `timeout` does not apply: a watch lasts as long as its job.
        """

        if after_frame_index is not None:
            try:
                video_pipeline_service_pb2.WatchJobRequest(after_frame_index=after_frame_index)
            except (ValueError, OverflowError):  # beyond 64 bits: refused here, not at the first next()
                raise unsendable("after_frame_index", "after_frame_index", after_frame_index) from None

        def open_call(after: int | None) -> Any:
            request = video_pipeline_service_pb2.WatchJobRequest(job_id=job_id)
            if after is not None:
                request.after_frame_index = after
            # No deadline: one meant for quick calls would end a watch of any long job.
            return self._invoke(self._stub.WatchJob, request, timeout=None, metadata=self._metadata)

        watch = JobWatch(open_call, after_frame_index, reconnect_window, on_reconnect, self._is_closed)
        self._end_on_close(watch._wait_ended)
        return watch

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return self._invoke(method, request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_grpc_error(error) from error


class JobSubmission:
    """A SubmitJob call under way: `result()` waits for the job, `cancel()` stops the upload."""

    def __init__(
        self, call: grpc.Future, chunked: ChunkedRequests, client_closed: Callable[[], bool] = lambda: False
    ) -> None:
        self._call = call  # also a grpc.Call
        self._chunked = chunked
        self._client_closed = client_closed

    def result(self) -> Job:
        """The QUEUED job; raises the call's error (or the upload's own) as a `VideodagError`."""
        try:
            response = self._call.result()
        except grpc.FutureCancelledError:
            if self._client_closed():
                raise client_closed_error() from None
            raise Cancelled("the job submission was cancelled by the client") from None
        except grpc.RpcError as error:
            if self._chunked.error is not None:
                raise self._chunked.error from error
            if error.code() is grpc.StatusCode.CANCELLED and self._client_closed():
                raise client_closed_error() from error
            raise from_grpc_error(error) from error
        except BaseException:
            # Ctrl-C while the upload is under way. Ending the upload (below) without cancelling
            # first would tell the server the video is complete: from a pipe, whose size is not
            # declared, it would queue a job of the bytes sent so far.
            self._call.cancel()
            raise
        finally:
            self._chunked.close()
        return job_from_proto(response.job)

    def cancel(self) -> None:
        self._call.cancel()
        self._chunked.close()  # an upload waiting on its progress reports stops waiting

    def add_done_callback(self, callback: Callable[[], object]) -> None:
        """Calls `callback()` once the call has ended (at once if it has), from gRPC's thread;
        `result()` then returns without waiting."""
        self._call.add_done_callback(lambda _call: callback())


class JobWatch(Iterator[JobEvent]):
    """The events of one job, across reconnects; `close()` (or leaving its `with`) stops it.

    `last_frame_index` is the index of the last frame delivered (the resume point), `job` the
    latest job state seen, `reconnects` how many times the connection was re-established.
    Only a watch that has had a first response reconnects after losing its connection: one
    that never got through is pointed at a wrong or stopped server, and waiting would only
    hide that.
    """

    def __init__(
        self,
        open_call: Callable[[int | None], Any],
        after_frame_index: int | None,
        reconnect_window: float,
        on_reconnect: Callable[[VideodagError, int | None], None] | None,
        client_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self._open_call = open_call
        self._client_closed = client_closed
        self._reconnect_window = reconnect_window
        self._on_reconnect = on_reconnect
        self.last_frame_index = after_frame_index
        self.job: Job | None = None
        self.reconnects = 0
        self._call: Any = None
        self._done = False
        self._wait_ended = threading.Event()
        """Ends a wait before the next attempt when set: by `close()`, or by the client's."""
        self._failing_since: float | None = None
        self._backoff = _FIRST_BACKOFF_SECONDS
        self._connected = False
        """Set by the first response: from then on a lost connection is worth reconnecting."""

    def __iter__(self) -> JobWatch:
        return self

    def __next__(self) -> JobEvent:
        try:
            return self._next_event()
        except (StopIteration, VideodagError):
            raise  # the watch has ended already
        except BaseException:
            # Ctrl-C while waiting (for an event, or to reconnect), or an `on_reconnect` that
            # raised: the watch ends with it rather than hold one of the server's watch slots.
            self.close()
            raise

    def _next_event(self) -> JobEvent:
        while not self._done:
            if self._call is None:
                self._call = self._open_call(self.last_frame_index)
            try:
                response = next(self._call)
            except StopIteration:
                self._done = True
                break
            except grpc.RpcError as error:
                self._call = None
                if self._done:
                    break  # closed from another thread
                if self._client_closed():
                    raise client_closed_error() from error
                self._wait_or_raise(error)
                continue
            self._failing_since, self._backoff = None, _FIRST_BACKOFF_SECONDS
            self._connected = True
            event = self._convert(response)
            if self._done:
                self._read_the_end()
            if event is not None:
                return event
        raise StopIteration

    def _read_the_end(self) -> None:
        """The final job is the last event: read the call's end (its OK status follows at once)
        rather than cancel a call the server is finishing, which its metrics would count as cancelled."""
        try:
            for _ in self._call:  # left in place meanwhile, so that close() can still cancel it
                pass
        except grpc.RpcError:
            pass  # whatever ended it, the final job is in hand
        finally:
            self._call = None

    def _convert(self, response: video_pipeline_service_pb2.WatchJobResponse) -> JobEvent | None:
        kind = response.WhichOneof("event")
        if kind == "frame":
            frame = frame_result_from_proto(response.frame)
            self.last_frame_index = frame.frame_index
            return frame
        if kind == "job":
            job = job_from_proto(response.job)
            self.job = job
            if job.state.is_finished:
                self._done = True
            return job
        return None

    def _wait_or_raise(self, error: grpc.RpcError) -> None:
        """Wait before the next attempt, or raise the error when it is final or the window is spent."""
        mapped = from_grpc_error(error)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        window_left = self._reconnect_window - (now - self._failing_since)
        if not self._worth_retrying(mapped) or window_left <= 0:
            self._done = True
            raise mapped from error
        if self._on_reconnect is not None:
            self._on_reconnect(mapped, self.last_frame_index)
        self._wait_ended.wait(min(self._delay_before_retry(mapped), window_left))
        self.reconnects += 1

    def _worth_retrying(self, error: VideodagError) -> bool:
        """A full server always (it answered, so it is the right one); a lost connection once connected."""
        if _is_watches_full(error):
            return True
        return self._connected and error.code in _RECONNECTABLE

    def _delay_before_retry(self, error: VideodagError) -> float:
        """The server's retry delay when it gives one for a full server; else a doubling backoff."""
        if _is_watches_full(error) and error.retry_after is not None:
            return error.retry_after
        delay = self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)
        return delay

    def close(self) -> None:
        """Cancels the call; iteration stops (a wait before reconnecting ends at once)."""
        self._done = True
        self._wait_ended.set()
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _is_watches_full(error: VideodagError) -> bool:
    return error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == _WATCHES_FULL


def job_from_proto(job: job_pb2.Job) -> Job:
    config = job.config
    return Job(
        id=job.id,
        state=JobState(job.state),
        pipeline_id=config.pipeline_id,
        options=_options_from_proto(config.options),
        file_name=config.file_name,
        size_bytes=config.declared_size_bytes,
        sha256=config.sha256,
        idempotency_key=job.idempotency_key,
        created_at=_datetime(job.create_time),
        started_at=_datetime(job.start_time) if job.HasField("start_time") else None,
        ended_at=_datetime(job.end_time) if job.HasField("end_time") else None,
        expires_at=_datetime(job.expire_time) if job.HasField("expire_time") else None,
        frames_done=job.progress.frames_done,
        frames_total=job.progress.frames_total,
        attempt=job.attempt,
        video=video_opened_from_proto(job.video_info) if job.HasField("video_info") else None,
        summary=run_summary_from_proto(job.summary) if job.HasField("summary") else None,
        error=error_from_status(job.error) if job.HasField("error") else None,
    )


def _options_from_proto(options: run_pb2.RunOptions) -> RunOptions:
    return RunOptions(
        frame_stride=options.frame_stride,
        max_frames=options.max_frames,
        start_seconds=seconds_of(options.start_offset) if options.HasField("start_offset") else None,
        end_seconds=seconds_of(options.end_offset) if options.HasField("end_offset") else None,
    )


def _datetime(timestamp: timestamp_pb2.Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)
