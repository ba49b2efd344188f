"""Jobs as small immutable values: what was asked, where it is, what it produced.

A job's life: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED (CANCELLED also straight
from QUEUED). An interrupted RUNNING job (restart, lost worker) goes back to QUEUED with its
`attempt` raised and its partial results discarded, so each frame result is stored once. A
QUEUED job whose worker took it and vanished before claiming it (a lost hand-over) is queued
again the same way, in a raised attempt, and so is a job whose run the server's own passing
trouble ended (a decoder killed, resources short) while it has attempts left.
Times are seconds since the epoch by the store's clock (`JobStore.clock`: Redis's for the
Redis backend), because they are shared between processes and machines.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videodag_service.errors import ErrorDetails, FieldViolation, Resource, VideodagError
from videodag_service.resource_errors import out_of_resources
from videodag_service.video import SamplingOptions, VideoInfo


class JobState(enum.Enum):
    """Where a job is in its life; the value is what the stores persist."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobRequest:
    """What a client asks for when it submits a video.

    declared_size_bytes / declared_sha256: checked against the bytes that arrive, as for a
    synchronous run. idempotency_key: a retried submit with the same key returns the job
    created first instead of a second one.
    """

    pipeline_id: str
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    file_name: str = ""
    declared_size_bytes: int | None = None
    declared_sha256: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class StoredVideo:
    """A job's uploaded video: a reference into the upload storage, never its bytes."""

    ref: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class NodeTimingRecord:
    """Time one node spent over a job's run (same fields as the DAG's `NodeTiming`)."""

    node_id: str
    plugin: str
    calls: int
    total_seconds: float
    errors: int


@dataclass(frozen=True)
class JobSummary:
    """The facts of a successful run, kept with the job."""

    pipeline_id: str
    pipeline_version: str
    frames_processed: int
    frames_with_errors: int
    wall_seconds: float
    decode_seconds: float
    node_timings: tuple[NodeTimingRecord, ...] = ()
    ended_early: bool = False
    frames_in_video: int | None = None
    """None when the run stopped before the video's end, and in records from before it was kept."""
    frames_unreadable: int = 0


@dataclass(frozen=True)
class JobError:
    """A failed job's error, kept as data so any process can report it later.

    It carries what `convert.status_from_error` needs to build the same `google.rpc.Status`
    the synchronous call would have ended with: code, reason, message and details.
    """

    status_code: str
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    resource: Resource | None = None
    retry_after_seconds: float | None = None
    """The retry hint of an error that asks for one (a killed decoder): submit the job again then.
    None in records from before it was kept."""

    @classmethod
    def from_exception(cls, error: BaseException) -> JobError:
        """The record of a run's exception; anything that is not a domain error (nor the process
        running short of threads, memory or files: `out_of_resources`) is INTERNAL."""
        error = out_of_resources(error) or error
        if isinstance(error, VideodagError):
            details = error.details
            return cls(
                status_code=error.status_code,
                reason=error.reason,
                message=error.message,
                metadata=dict(details.metadata),
                field_violations=tuple(details.field_violations),
                resource=details.resource,
                retry_after_seconds=details.retry_after_seconds,
            )
        return cls("INTERNAL", "INTERNAL", f"internal error: {type(error).__name__}: {error}")

    def to_exception(self) -> VideodagError:
        """A domain error equal to the recorded one, for the single error -> status mapping."""
        return RecordedJobError(self)


class RecordedJobError(VideodagError):
    """A job's recorded error raised again; its code and reason are those recorded."""

    def __init__(self, record: JobError) -> None:
        super().__init__(
            record.message,
            ErrorDetails(
                metadata=dict(record.metadata),
                field_violations=record.field_violations,
                resource=record.resource,
                retry_after_seconds=record.retry_after_seconds,
            ),
        )
        # Instance attributes shadow the class-level code and reason of VideodagError.
        self.status_code = record.status_code  # type: ignore[misc]
        self.reason = record.reason  # type: ignore[misc]


@dataclass(frozen=True)
class Job:
    """A pipeline run over a stored video, outliving the call that submitted it.

    attempt: how many times a worker was given the job (1 on creation; raised when an
        interrupted run is queued again, a lost hand-over made again, or a run the server's
        passing trouble ended is queued again). Workers claim a job
        for one attempt, and every write they make is refused once the attempt is no longer
        current.
    frames_done: results stored by the current attempt.
    frames_total: expected frames from the declared frame count and the sampling; 0 unknown.
    expire_at: when retention deletes the finished job; None before it is finished.
    revision: raised on every change, so a watcher can tell that something changed.
    unknown_sampling: sampling options set by a later release, which this one cannot apply
        (read from a store shared through a rolling upgrade or a rollback): the job is shown,
        but not run here.
    """

    id: str
    state: JobState
    pipeline_id: str
    sampling: SamplingOptions
    video: StoredVideo
    created_at: float
    file_name: str = ""
    idempotency_key: str | None = None
    attempt: int = 1
    started_at: float | None = None
    finished_at: float | None = None
    expire_at: float | None = None
    frames_done: int = 0
    frames_total: int = 0
    video_info: VideoInfo | None = None
    summary: JobSummary | None = None
    error: JobError | None = None
    revision: int = 0
    unknown_sampling: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class HandOver:
    """A QUEUED job's attempt as handed to the queue's workers, not yet claimed by one: what
    recovery asks the queue about (`JobQueue.lost_hand_overs`)."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class RunClaim:
    """One worker's run of a job: the attempt it claimed and the moment of the claim.

    Every write of a run names its claim, and the store takes it only while that claim is the
    job's current run. The attempt alone cannot tell two runs apart when a store forgets a
    claim (Redis restored from a snapshot taken before it, or a failover to a replica that had
    not seen it): the job is handed out again in the same attempt, a second worker claims it,
    and the first run's writes must be refused rather than mixed into the second's results.
    """

    job_id: str
    attempt: int
    started_at: float

    @classmethod
    def of(cls, job: Job) -> RunClaim:
        """The claim a job returned by `JobStore.claim` is running under."""
        if job.started_at is None:
            raise ValueError(f"job {job.id} is not running: it has no claim")
        return cls(job.id, job.attempt, job.started_at)


@dataclass(frozen=True)
class JobFrame:
    """One stored per-frame result: `result` is the pipeline's JSON-like output for the frame."""

    frame_index: int
    timestamp_seconds: float
    result: dict[str, Any]


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing, newest first; `next_page_token` is "" on the last page."""

    jobs: tuple[Job, ...]
    next_page_token: str = ""


WatchEvent = Job | JobFrame
"""What `JobService.watch` yields: the job when its state or progress changed, or a frame."""
