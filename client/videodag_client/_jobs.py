"""Jobs from the client side: submit a video, then get, list, cancel, delete or watch its job.

`JobCalls` holds the job calls; `VideodagClient` inherits it. `submit_job` returns once the
job is queued; `start_job_submission` starts the same call for a caller that waits for it its
own way (the async client). The job values are in `_job_values`, the reconnecting watch
`watch_job` returns in `_job_watch`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from videodag.v1 import run_pb2, video_pipeline_service_pb2
from videodag_client._arguments import job_states, state_values, text_argument
from videodag_client._errors import Cancelled, Internal, VideodagError, client_closed_error, from_grpc_error
from videodag_client._job_values import Job, JobPage, JobState, job_from_proto
from videodag_client._job_watch import JobWatch
from videodag_client._options import RunOptions, refuse_bool, unsendable
from videodag_client._upload import DEFAULT_CHUNK_SIZE, ChunkedRequests, PathOrFile, UploadProgress, run_config
from videodag_client._upload_call import start_upload_call, upload_call_error
from videodag_client._wire import bytes_field_encoder

_encode_job_chunk = bytes_field_encoder(video_pipeline_service_pb2.SubmitJobRequest, "chunk")
# Empty pages whose token leads on are allowed (AIP-158: a server may stop a page short, at none,
# when its time for one runs out); a hundred in a row are a listing that is getting nowhere.
_MAX_EMPTY_PAGES_IN_A_ROW = 100


class JobCalls:
    """The job calls of `VideodagClient`; expects `_metadata`, `_deadline`, `_invoke` (which
    picks the callable off its connection), `_call_failed`, `_check_open` (which refuse calls on a closed client),
    `_is_closed` and `_end_on_close` from it."""

    _metadata: tuple[tuple[str, str], ...]
    _deadline: Callable[[float | None], float | None]
    _invoke: Callable[..., Any]
    _call_failed: Callable[[Any], None]
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
        return start_job_submission(
            self, path_or_file, pipeline_id, options, idempotency_key=idempotency_key, chunk_size=chunk_size,
            declare_size=declare_size, checksum=checksum, timeout=timeout, on_upload_progress=on_upload_progress,
        ).result()

    def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job as it is now; `NotFound` for an unknown or deleted id."""
        request = video_pipeline_service_pb2.GetJobRequest(job_id=text_argument("job_id", job_id))
        response = self._call(lambda c: c.stub.GetJob, request, timeout)
        return job_from_proto(response.job)

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] = (),
        page_size: int = 0,
        page_token: str | None = "",
        timeout: float | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, only those in `states` (all when empty); the first
        page for a `page_token` of "" or None, else the page `next_page_token` named."""
        token = "" if page_token is None else text_argument("page_token", page_token)
        request = video_pipeline_service_pb2.ListJobsRequest(page_token=token,
                                                             states=state_values(states))
        refuse_bool("page_size", page_size)
        try:
            request.page_size = page_size
        except (ValueError, OverflowError):  # beyond 32 bits: raised as the server's own refusals are
            raise unsendable("page_size", "page_size", page_size) from None
        response = self._call(lambda c: c.stub.ListJobs, request, timeout)
        return JobPage(tuple(job_from_proto(job) for job in response.jobs), response.next_page_token)

    def iter_jobs(
        self, *, states: Iterable[JobState] = (), page_size: int = 0, timeout: float | None = None
    ) -> Iterator[Job]:
        """Every job, newest first, fetching pages as needed; `timeout` is each page's.

        A server whose next page token leads back to a page of this listing, or that sends empty
        page after empty page, would keep it going forever: `Internal` ends it (reason
        `PAGE_TOKEN_REPEATED` or `EMPTY_PAGES_WITHOUT_END`), after the jobs of the pages read.
        """
        return self._pages_of_jobs(job_states(states), page_size, timeout)  # states refused here, not at next()

    def _pages_of_jobs(self, states: tuple[JobState, ...], page_size: int, timeout: float | None) -> Iterator[Job]:
        trail = _PageTrail()
        token: str | None = ""
        while token is not None:
            page = self.list_jobs(states=states, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.jobs
            token = trail.next_token(page)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancels a queued or running job and returns it CANCELLED; `FailedPrecondition` if it finished."""
        request = video_pipeline_service_pb2.CancelJobRequest(job_id=text_argument("job_id", job_id))
        response = self._call(lambda c: c.stub.CancelJob, request, timeout)
        return job_from_proto(response.job)

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> None:
        """Deletes a finished job and its results; `FailedPrecondition` while it is queued or running."""
        request = video_pipeline_service_pb2.DeleteJobRequest(job_id=text_argument("job_id", job_id))
        self._call(lambda c: c.stub.DeleteJob, request, timeout)

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

        text_argument("job_id", job_id)
        if after_frame_index is not None:
            refuse_bool("after_frame_index", after_frame_index)
            try:
                video_pipeline_service_pb2.WatchJobRequest(after_frame_index=after_frame_index)
            except (ValueError, OverflowError):  # beyond 64 bits: refused here, not at the first next()
                raise unsendable("after_frame_index", "after_frame_index", after_frame_index) from None

        def open_call(after: int | None) -> Any:
            request = video_pipeline_service_pb2.WatchJobRequest(job_id=job_id)
            if after is not None:
                request.after_frame_index = after
            # No deadline: one meant for quick calls would end a watch of any long job.
            return self._invoke(lambda c: c.stub.WatchJob, request, timeout=None, metadata=self._metadata)

        watch = JobWatch(open_call, after_frame_index, reconnect_window, on_reconnect, self._is_closed)
        self._end_on_close(watch._wait_ended)
        return watch

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return self._invoke(method, request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._lookup_error(error) from error

    def _lookup_error(self, error: grpc.RpcError) -> VideodagError:
        """A lookup the client's close cancelled says so (`CLIENT_CLOSED`), as its streams do:
        gRPC's "Channel closed!" CANCELLED reads as a cancel someone asked for."""
        if self._is_closed() and error.code() is grpc.StatusCode.CANCELLED:
            return client_closed_error()
        return from_grpc_error(error)


class _PageTrail:
    """The pages one listing has read, to tell a listing that ends from one a server keeps going."""

    def __init__(self) -> None:
        self._page_by_token = {"": 1}
        self._empty_in_a_row = 0

    def next_token(self, page: JobPage) -> str | None:
        """The token of the page after `page`, None after the last; `Internal` for a listing that would not end."""
        if not page.next_page_token:
            return None
        pages_read = len(self._page_by_token)
        if (earlier := self._page_by_token.get(page.next_page_token)) is not None:
            raise Internal(f"the server's job listing would never end: the token it gave after page {pages_read} "
                           f"asks for page {earlier} again", reason="PAGE_TOKEN_REPEATED")
        self._empty_in_a_row = 0 if page.jobs else self._empty_in_a_row + 1
        if self._empty_in_a_row >= _MAX_EMPTY_PAGES_IN_A_ROW:
            first_empty = pages_read - self._empty_in_a_row + 1
            raise Internal(f"the server's job listing is getting nowhere: pages {first_empty} to {pages_read} were "
                           "all empty, each with a token for another", reason="EMPTY_PAGES_WITHOUT_END")
        self._page_by_token[page.next_page_token] = pages_read + 1
        return page.next_page_token


def start_job_submission(
    client: JobCalls,
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
    """`client.submit_job` up to the call started, so that another thread can cancel it: the
    async client starts it on a thread of its own and awaits its end without one. For this
    package only, hence a function rather than a method `VideodagClient` would show."""

    def first_request() -> tuple[video_pipeline_service_pb2.SubmitJobRequest, run_pb2.RunConfig]:
        config = video_pipeline_service_pb2.SubmitJobConfig(
            run_config=run_config(pipeline_id, options, "config.run_config."), idempotency_key=idempotency_key or ""
        )
        request = video_pipeline_service_pb2.SubmitJobRequest(config=config)
        return request, request.config.run_config

    call, chunked = start_upload_call(
        path_or_file,
        check_open=client._check_open,
        first_request=first_request,
        encode_chunk=_encode_job_chunk,
        start_call=lambda requests: client._invoke(
            lambda c: c.submit_job.future, requests, timeout=client._deadline(timeout), metadata=client._metadata
        ),
        chunk_size=chunk_size,
        declare_size=declare_size,
        checksum=checksum,
        on_upload_progress=on_upload_progress,
    )
    return JobSubmission(call, chunked, client._is_closed, client._call_failed)


class JobSubmission:
    """A SubmitJob call under way: `result()` waits for the job, `cancel()` stops the upload."""

    def __init__(
        self, call: grpc.Future, chunked: ChunkedRequests, client_closed: Callable[[], bool] = lambda: False,
        call_failed: Callable[[Any], None] = lambda call: None,
    ) -> None:
        self._call = call  # also a grpc.Call
        self._chunked = chunked
        self._client_closed = client_closed
        self._call_failed = call_failed  # told before the error is raised: the client's next call may depend on it

    def result(self) -> Job:
        """The QUEUED job; raises the call's error (or the upload's own) as a `VideodagError`."""
        try:
            response = self._call.result()
        except grpc.FutureCancelledError:
            if self._client_closed():
                raise client_closed_error() from None
            raise Cancelled("the job submission was cancelled by the client") from None
        except grpc.RpcError as error:
            self._call_failed(self._call)
            raise upload_call_error(error, self._chunked, self._client_closed) from error
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
