"""Protobuf <-> job values: `videodag.v1.Job` and the job RPCs' messages.

The job counterpart of `convert`, reusing its conversions (sampling options, frame results,
video facts, durations, error statuses) so a job reports exactly what a synchronous run would.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import timestamp_pb2

from videodag.v1 import job_pb2, run_pb2, video_pipeline_service_pb2
from videodag_service import convert
from videodag_service.errors import FieldViolation, InvalidOptions
from videodag_service.jobs import Job, JobFrame, JobPage, JobRequest, JobState, JobSummary, WatchEvent
from videodag_service.jobs.ids import checked_idempotency_key, page_token_after
from videodag_service.video import SamplingOptions
from videodag_service.wording import counted

_STATES = {
    JobState.QUEUED: job_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: job_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: job_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: job_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}
_STATES_FROM_PROTO = {number: state for state, number in _STATES.items()}


def job_request_from_proto(config: video_pipeline_service_pb2.SubmitJobConfig) -> JobRequest:
    """The submission a SubmitJob config describes; bad options are INVALID_ARGUMENT.

    Every bad field of the config is named in the one error, the idempotency key's with the
    run config's, so a client fixes them all in one go. The run config's fields are named by
    their path in the RunConfig (`convert.located_in_request` completes them), the key's from
    the request's root.
    """
    violations = _idempotency_key_violations(config.idempotency_key)
    if not config.HasField("run_config"):
        violations.insert(0, FieldViolation("config.run_config", "is required: the pipeline and its options"))
        raise InvalidOptions(violations)
    run_config = config.run_config
    try:
        sampling = convert.checked_run_config(run_config, decodes_during_upload=False)
    except InvalidOptions as error:
        raise InvalidOptions([*error.details.field_violations, *violations]) from None
    if violations:
        raise InvalidOptions([*convert.pipeline_id_violations(run_config.pipeline_id), *violations])
    return JobRequest(
        pipeline_id=run_config.pipeline_id,
        sampling=sampling,
        file_name=run_config.file_name,
        declared_size_bytes=run_config.declared_size_bytes or None,
        declared_sha256=run_config.sha256 or None,
        idempotency_key=config.idempotency_key or None,
    )


def _idempotency_key_violations(key: str) -> list[FieldViolation]:
    """The key's violation (named `config.idempotency_key`), or none for a good or absent key."""
    try:
        checked_idempotency_key(key)
    except InvalidOptions as error:
        return list(error.details.field_violations)
    return []


# Bad values of a ListJobs state filter named one by one; the rest are counted.
MAX_STATE_VIOLATIONS = 10


def job_state_filter(states: Iterable[int]) -> tuple[list[JobState], list[FieldViolation]]:
    """A ListJobs state filter, each state once (a filter repeating one 300,000 times is more
    than the job store's query takes), and a violation for each JOB_STATE_UNSPECIFIED or unknown
    number, the first `MAX_STATE_VIOLATIONS` of them and then one for the rest: a violation each
    for 300,000 bad values would take more than the status's trailer may."""
    converted: dict[JobState, None] = {}
    violations: list[FieldViolation] = []
    more = 0
    for position, number in enumerate(states):
        state = _STATES_FROM_PROTO.get(number)  # type: ignore[call-overload]
        if state is not None:
            converted[state] = None
        elif len(violations) < MAX_STATE_VIOLATIONS:
            violations.append(FieldViolation(f"states[{position}]", f"{number} is not a job state to filter by"))
        else:
            more += 1
    if more:
        rest = counted(more, "more value is", "more values are")
        violations.append(FieldViolation("states", f"{rest} not job states"))
    return list(converted), violations


# Room in a ListJobsResponse for its page token, and around each job its field's tag and length.
_PAGE_TOKEN_ROOM = 256
_JOB_FIELD_ROOM = 6


def job_page_to_proto(page: JobPage, max_bytes: int) -> video_pipeline_service_pb2.ListJobsResponse:
    """The page as sent: cut short where more jobs would make it larger than `max_bytes`, its
    token then continuing after the last job it holds. A thousand jobs with long file names
    (1,024 characters of up to 4 bytes each) and errors that repeat them outgrow the 4 MiB a
    client receives by default, and the client would get no page at all."""
    jobs: list[job_pb2.Job] = []
    size = _PAGE_TOKEN_ROOM
    for job in page.jobs:
        message = job_to_proto(job)
        size += message.ByteSize() + _JOB_FIELD_ROOM
        if jobs and size > max_bytes:
            return video_pipeline_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=page_token_after(jobs[-1].id))
        jobs.append(message)
    return video_pipeline_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=page.next_page_token)


def job_to_proto(job: Job) -> job_pb2.Job:
    message = job_pb2.Job(
        id=job.id,
        state=_STATES[job.state],
        config=run_pb2.RunConfig(
            pipeline_id=job.pipeline_id,
            options=sampling_to_proto(job.sampling),
            file_name=job.file_name,
            declared_size_bytes=job.video.size_bytes,
            sha256=job.video.sha256,
        ),
        idempotency_key=job.idempotency_key or "",
        create_time=timestamp(job.created_at),
        progress=job_pb2.JobProgress(frames_done=job.frames_done, frames_total=job.frames_total),
        attempt=job.attempt,
    )
    if job.started_at is not None:
        message.start_time.CopyFrom(timestamp(job.started_at))
    if job.finished_at is not None:
        message.end_time.CopyFrom(timestamp(job.finished_at))
    if job.expire_at is not None:
        message.expire_time.CopyFrom(timestamp(job.expire_at))
    if job.video_info is not None:
        message.video_info.CopyFrom(convert.video_info_event(job.video_info).video_info)
    if job.summary is not None:
        message.summary.CopyFrom(job_summary_to_proto(job.summary))
    if job.error is not None:
        message.error.CopyFrom(convert.status_from_error(job.error.to_exception()))
    return message


def job_summary_to_proto(summary: JobSummary) -> run_pb2.RunSummary:
    return convert.run_summary(
        summary.pipeline_id,
        summary.pipeline_version,
        frames_processed=summary.frames_processed,
        frames_with_errors=summary.frames_with_errors,
        wall_seconds=summary.wall_seconds,
        decode_seconds=summary.decode_seconds,
        timings=summary.node_timings,
        ended_early=summary.ended_early,
        frames_in_video=summary.frames_in_video,
        frames_unreadable=summary.frames_unreadable,
    )


def sampling_to_proto(sampling: SamplingOptions) -> run_pb2.RunOptions:
    """The options as a client would have sent them (1 and no limit come back as 1 and 0)."""
    options = run_pb2.RunOptions(frame_stride=sampling.frame_stride, max_frames=sampling.max_frames or 0)
    if sampling.start_seconds is not None:
        options.start_offset.CopyFrom(convert.duration(sampling.start_seconds))
    if sampling.end_seconds is not None:
        options.end_offset.CopyFrom(convert.duration(sampling.end_seconds))
    return options


def watch_event_to_proto(event: WatchEvent) -> video_pipeline_service_pb2.WatchJobResponse:
    if isinstance(event, JobFrame):
        return video_pipeline_service_pb2.WatchJobResponse(
            frame=convert.frame_result(event.frame_index, event.timestamp_seconds, event.result)
        )
    return video_pipeline_service_pb2.WatchJobResponse(job=job_to_proto(event))


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromNanoseconds(round(seconds * 1e9))
    return message
