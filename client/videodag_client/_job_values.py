"""A job as the client sees it: its state, the job itself, a page of jobs, a watch's events.

Plain frozen values converted from the protobuf messages once, here; the calls that return
them (`_jobs`) and the watch that yields them (`_job_watch`) share them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from google.protobuf import timestamp_pb2

from videodag.v1 import job_pb2, run_pb2
from videodag_client._errors import VideodagError, error_from_status
from videodag_client._events import (
    FrameResult,
    RunSummary,
    VideoOpened,
    run_summary_from_proto,
    seconds_of,
    video_opened_from_proto,
)
from videodag_client._options import RunOptions


class JobState(enum.Enum):
    """Where a job is in its life: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED.

    UNKNOWN: a state this client does not know (one a later server release added), or none:
    a job in it is read like any other instead of failing the page or watch that holds it.
    """

    UNKNOWN = job_pb2.JOB_STATE_UNSPECIFIED
    QUEUED = job_pb2.JOB_STATE_QUEUED
    RUNNING = job_pb2.JOB_STATE_RUNNING
    SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
    FAILED = job_pb2.JOB_STATE_FAILED
    CANCELLED = job_pb2.JOB_STATE_CANCELLED

    @classmethod
    def _missing_(cls, value: object) -> JobState | None:
        """A number the server sent that this client does not know; anything else is no state."""
        return cls.UNKNOWN if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def is_finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """A job as the server reported it; times are timezone-aware UTC datetimes.

    A time the server sent outside a Timestamp's range (years 1 to 9999, `datetime`'s too) reads
    as the nearest end of it: one wrong field does not make the job, or a page of jobs, unreadable.
    """

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# A Timestamp's range as `datetime` holds it, in microseconds from the epoch: 0001-01-01T00:00:00Z
# to 9999-12-31T23:59:59.999999Z.
_FIRST_MICROSECOND = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LAST_MICROSECOND = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


def _datetime(timestamp: timestamp_pb2.Timestamp) -> datetime:
    """The moment, as `ToDatetime` reads a valid Timestamp (nanoseconds cut to microseconds); one
    past either end of the range, which `ToDatetime` refuses with a ValueError, as that end."""
    microseconds = (timestamp.seconds * 1_000_000_000 + timestamp.nanos) // 1000
    return _EPOCH + _MICROSECOND * min(max(microseconds, _FIRST_MICROSECOND), _LAST_MICROSECOND)
