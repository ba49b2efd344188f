"""The job RPCs of `videodag.v1.VideoPipelineService`, as a mixin of the servicer.

A translator like the rest of the servicer: protobuf in, `JobService` calls, protobuf out;
every domain error goes through the servicer's single error -> status mapping.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from videodag.v1 import video_pipeline_service_pb2 as pb
from videodag_service import convert, convert_jobs
from videodag_service.call_slots import CallSlots, RunSlots
from videodag_service.call_status import abort
from videodag_service.client_streams import chunks, ended_by_half_close, first_config
from videodag_service.errors import (
    ErrorDetails,
    InvalidOptions,
    RunCancelled,
    TooManyJobUploads,
    TooManyWatches,
)
from videodag_service.jobs import Job, JobService, listing_violations
from videodag_service.unread_results import UnreadResultsWatchdog
from videodag_service.upload_idle import first_message_watching_idle, store_watching_idle
from videodag_service.wording import counted

# A refused watcher may poll GetJob meanwhile; a watch slot frees when some job ends.
WATCH_RETRY_SECONDS = 5.0
# An upload slot frees when some upload ends, which on a fast network is soon.
UPLOAD_RETRY_SECONDS = 1.0


def too_many_watches(capacity: int) -> TooManyWatches:
    return TooManyWatches(
        f"the server already streams its maximum of {counted(capacity, 'job watch', 'job watches')}; "
        "retry shortly, or poll GetJob meanwhile",
        ErrorDetails(metadata={"max_job_watches": str(capacity)}, retry_after_seconds=WATCH_RETRY_SECONDS),
    )


def too_many_job_uploads(capacity: int) -> TooManyJobUploads:
    return TooManyJobUploads(
        f"the server already receives its maximum of {counted(capacity, 'job upload', 'job uploads')}; retry shortly",
        ErrorDetails(metadata={"max_job_uploads": str(capacity)}, retry_after_seconds=UPLOAD_RETRY_SECONDS),
    )


class JobRpcs:
    """SubmitJob, GetJob, ListJobs, CancelJob, DeleteJob and WatchJob over `self._jobs`."""

    _jobs: JobService
    _run_slots: RunSlots
    _watch_slots: CallSlots
    _job_upload_slots: CallSlots
    _upload_idle_seconds: float
    _upload_min_rate: float
    _max_response_bytes: int
    _unread_results: UnreadResultsWatchdog

    @contextmanager
    def _job_errors(self, context: grpc.ServicerContext, request_path: str | None = None) -> Iterator[None]:
        """Ends the call with the status of whatever the block raises, the same for every job RPC:
        an outage of the job store is UNAVAILABLE with a retry hint (`as_domain_error`), not
        INTERNAL. `request_path` places a bad field in the request (SubmitJob's run config)."""
        try:
            yield
        except Exception as error:
            error = self._jobs.as_domain_error(error)
            abort(context, error if request_path is None else convert.located_in_request(error, request_path))

    def SubmitJob(self, request_iterator: Iterator[pb.SubmitJobRequest], context: grpc.ServicerContext
                  ) -> pb.SubmitJobResponse:
        with self._job_errors(context, convert.JOB_RUN_CONFIG_PATH):
            try:
                job = self._submit(request_iterator, context)
            except (RunCancelled, grpc.RpcError) as cancelled:  # the client's cancel, or the shutdown's
                if (shutdown := self._run_slots.ended_by_the_shutdown("the upload")) is None:
                    raise
                raise shutdown from cancelled
        return pb.SubmitJobResponse(job=convert_jobs.job_to_proto(job))

    def _submit(self, request_iterator: Iterator[pb.SubmitJobRequest], context: grpc.ServicerContext) -> Job:
        self._run_slots.refuse_if_draining()
        with self._job_upload_slots.hold():
            self._run_slots.refuse_if_draining()  # again once counted, as `RunSlots.hold` does
            config: pb.SubmitJobConfig = first_message_watching_idle(
                first_config, request_iterator, self._upload_idle_seconds
            )
            job_request = convert_jobs.job_request_from_proto(config)
            # A job must never be queued for an upload its client cancelled midway.
            uploaded = ended_by_half_close(chunks(request_iterator), context)
            return store_watching_idle(
                functools.partial(self._jobs.submit, job_request), uploaded, self._upload_idle_seconds,
                min_bytes_per_second=self._upload_min_rate,
            )

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        with self._job_errors(context):
            job = self._jobs.get(request.job_id)
        return pb.GetJobResponse(job=convert_jobs.job_to_proto(job))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        with self._job_errors(context):
            states, violations = convert_jobs.job_state_filter(request.states)
            if violations := [*listing_violations(request.page_size, request.page_token), *violations]:
                raise InvalidOptions(violations)
            page = self._jobs.list_jobs(request.page_size, request.page_token, states)
        return convert_jobs.job_page_to_proto(page, self._max_response_bytes)

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        with self._job_errors(context):
            job = self._jobs.cancel(request.job_id)
        return pb.CancelJobResponse(job=convert_jobs.job_to_proto(job))

    def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.ServicerContext) -> pb.DeleteJobResponse:
        with self._job_errors(context):
            self._jobs.delete(request.job_id)
        return pb.DeleteJobResponse()

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext
                 ) -> Iterator[pb.WatchJobResponse]:
        return self._unread_results.watching(self._watch_job_call(request, context), context)

    def _watch_job_call(self, request: pb.WatchJobRequest, context: grpc.ServicerContext
                        ) -> Iterator[pb.WatchJobResponse]:
        after = request.after_frame_index if request.HasField("after_frame_index") else None
        with self._job_errors(context), self._watch_slots.hold():
            events = self._jobs.watch(
                request.job_id, after,
                stop_requested=lambda: not context.is_active() or self._run_slots.ending,
            )
            finished = False
            for event in events:
                yield convert_jobs.watch_event_to_proto(event)
                finished = isinstance(event, Job) and event.state.is_finished
            if not finished:  # stopped by the end of the shutdown grace: its client resumes elsewhere
                self._run_slots.refuse_if_ended("the watch")
