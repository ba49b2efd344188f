"""The domain error tree: every failure a caller can see, with the gRPC code it maps to.

The engine, video and job layers raise these and never import grpc; the servicer turns
them into a status with `google.rpc` details in one place (`convert.status_from_error`).
Each class names its status code as a string so this module stays grpc-free.

    VideodagError
    ├── InvalidArgument                 INVALID_ARGUMENT
    │   ├── BadRequestStream            first message not a config, config twice
    │   ├── MalformedRequest            a message that does not parse as its type
    │   ├── InvalidOptions              bad sampling options or field values
    │   ├── InvalidPipelineId           id outside [a-z0-9_.-]
    │   ├── EmptyUpload
    │   └── VideoUnreadable             also a ValueError: "Unable to read video file"
    ├── PipelineNotFound                NOT_FOUND, lists the known ids
    ├── JobNotFound                     NOT_FOUND
    ├── LimitExceeded                   RESOURCE_EXHAUSTED
    │   ├── UploadTooLarge
    │   ├── VideoTooLarge               duration, frame count or dimensions
    │   ├── TooManyRuns                 carries a retry hint
    │   ├── TooManyWatches              WatchJob streams at their cap; retry hint
    │   ├── TooManyReflectionStreams    reflection streams at their cap
    │   ├── TooManyJobUploads           SubmitJob uploads at their cap; retry hint
    │   └── DiskFull
    ├── UploadCorrupted                 DATA_LOSS: size or checksum mismatch
    ├── NodeFailed                      INTERNAL: names pipeline, node, plugin and frame
    │   └── NodeTimedOut                a node call outlived node_timeout_seconds
    ├── DecoderDidNotStart              INTERNAL: the server's fault, not the video's
    ├── UnknownSamplingOptions          INTERNAL: a job asks for sampling a later release added
    ├── StorageUnwritable               INTERNAL: the upload folder cannot be written (read-only, permissions)
    ├── DecoderKilled                   UNAVAILABLE: a decoder killed by a signal the server did not send
    ├── ServerOutOfResources            UNAVAILABLE: no thread, process, memory or file descriptor; retry hint
    ├── VideoFileMissing                UNAVAILABLE: the stored video was removed before it was decoded
    ├── FailedPrecondition              FAILED_PRECONDITION
    │   ├── JobAlreadyFinished          cancel a job that has finished
    │   ├── JobNotFinished              delete a job that has not
    │   └── IdempotencyKeyReused        a key already used for another submission
    ├── RunCancelled                    CANCELLED
    ├── DeadlineExceeded                DEADLINE_EXCEEDED
    │   └── UploadIdle                  no upload bytes for upload_idle_timeout_seconds
    ├── ServerDraining                  UNAVAILABLE
    ├── JobStoreUnavailable             UNAVAILABLE: the job backend cannot be reached; retry hint
    ├── TooManyHealthWatches            UNIMPLEMENTED: health watches at their cap (see its docstring)
    └── Unauthenticated                 UNAUTHENTICATED
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from videodag_service.wording import plain_number

ERROR_DOMAIN = "videodag.dev"

# The most each text of a status's details (a metadata value, a field's description) takes as
# sent, in UTF-8 bytes: the edge cuts longer ones (`convert.status_from_error`), so that a
# status always fits in what clients accept as trailers.
MAX_DETAIL_BYTES = 256


@dataclass(frozen=True)
class FieldViolation:
    """A request field that is wrong, and why (becomes `google.rpc.BadRequest`)."""

    field: str
    description: str


@dataclass(frozen=True)
class Resource:
    """The resource an error is about (becomes `google.rpc.ResourceInfo`)."""

    resource_type: str
    resource_name: str
    description: str = ""


@dataclass
class ErrorDetails:
    """Structured facts attached to an error; all optional."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: Sequence[FieldViolation] = ()
    resource: Resource | None = None
    retry_after_seconds: float | None = None


class VideodagError(Exception):
    """Base of every error videodag reports to a caller.

    `status_code` is the name of a `grpc.StatusCode`; `reason` is a stable
    UPPER_SNAKE identifier clients can branch on (ErrorInfo.reason).
    """

    status_code: ClassVar[str] = "UNKNOWN"
    reason: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, details: ErrorDetails | None = None, *, logged_message: str | None = None) -> None:
        """`logged_message`: what the server's own log says of the error, where `message` quotes
        the caller's upload (the start of a text file): the log is read by others than the caller."""
        super().__init__(message)
        self.message = message
        self.details = details or ErrorDetails()
        self.logged_message = logged_message or message

    def __str__(self) -> str:
        return self.message


def logged(error: BaseException) -> str:
    """An error as the server's log gives it (`VideodagError.logged_message`)."""
    return error.logged_message if isinstance(error, VideodagError) else str(error)


class InvalidArgument(VideodagError):
    """Raised when the request itself is wrong; retrying it unchanged cannot succeed."""

    status_code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"


class BadRequestStream(InvalidArgument):
    """Raised when the client stream is out of order: no config first, or a config twice."""

    reason = "BAD_REQUEST_STREAM"


class MalformedRequest(InvalidArgument):
    """Raised when a request message cannot be parsed as its type: cut or corrupt bytes, or a
    string field that is not UTF-8 (which protobuf requires), as a hand-built message can be."""

    reason = "MALFORMED_REQUEST"


class InvalidOptions(InvalidArgument):
    """Raised when a config field or run option has a value outside its range."""

    reason = "INVALID_OPTIONS"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid fields: {message}", ErrorDetails(field_violations=tuple(violations)))


class InvalidPipelineId(InvalidArgument):
    """Raised when a pipeline id is not a plain name (ids are names, never paths)."""

    reason = "INVALID_PIPELINE_ID"


class EmptyUpload(InvalidArgument):
    """Raised when the client stream ends with no video bytes."""

    reason = "EMPTY_UPLOAD"


class VideoUnreadable(InvalidArgument, ValueError):
    """Raised when OpenCV cannot open or decode the uploaded file.

    Also a ValueError, so callers of `VideoFilePipelineService.run_on_file` can catch it
    as one; the message always contains "Unable to read video file".
    """

    reason = "VIDEO_UNREADABLE"


class PipelineNotFound(VideodagError, LookupError):
    """Raised when no pipeline has the requested id; the message lists the known ids.

    For programs, the metadata gives `known_pipeline_ids`, comma-separated whole ids, as many as
    fit in a detail field (a list cut mid-id would end in an id that does not exist), and
    `known_pipeline_count`, so a caller can tell a complete list from a shortened one."""

    status_code = "NOT_FOUND"
    reason = "PIPELINE_NOT_FOUND"

    def __init__(self, pipeline_id: str, known_ids: Sequence[str]) -> None:
        known = ", ".join(sorted(known_ids)) or "(none)"
        # There is no default pipeline: an empty id is named as missing, not as an odd name.
        problem = f"unknown pipeline {pipeline_id!r}" if pipeline_id else "no pipeline_id given (it is required)"
        super().__init__(
            f"{problem}; known pipelines: {known}",
            ErrorDetails(
                metadata={
                    "pipeline_id": pipeline_id,
                    "known_pipeline_ids": _whole_items_that_fit(sorted(known_ids), MAX_DETAIL_BYTES),
                    "known_pipeline_count": str(len(known_ids)),
                },
                resource=Resource("videodag.v1.Pipeline", pipeline_id, "no pipeline has this id"),
            ),
        )
        self.pipeline_id = pipeline_id
        self.known_ids = tuple(sorted(known_ids))


def _whole_items_that_fit(items: Sequence[str], max_bytes: int) -> str:
    """`items` comma-separated, the first ones whose list fits in `max_bytes` of UTF-8."""
    kept: list[str] = []
    size = 0
    for item in items:
        size += len(item.encode()) + (1 if kept else 0)
        if size > max_bytes:
            break
        kept.append(item)
    return ",".join(kept)


class JobNotFound(VideodagError, LookupError):
    """Raised when no job has the requested id (never existed, or deleted)."""

    status_code = "NOT_FOUND"
    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"unknown job {job_id!r}" if job_id else "no job_id given (it is required)",
            ErrorDetails(metadata={"job_id": job_id},
                         resource=Resource("videodag.v1.Job", job_id, "no job has this id")),
        )
        self.job_id = job_id


class LimitExceeded(VideodagError):
    """Raised when a request goes over a configured limit of the server."""

    status_code = "RESOURCE_EXHAUSTED"
    reason = "LIMIT_EXCEEDED"


class UploadTooLarge(LimitExceeded):
    """Raised as soon as an upload (declared or received) goes over max_upload_bytes."""

    reason = "UPLOAD_TOO_LARGE"


class VideoTooLarge(LimitExceeded):
    """Raised when a video's duration, frame count or frame size is over a limit."""

    reason = "VIDEO_TOO_LARGE"


class TooManyRuns(LimitExceeded):
    """Raised at once when the server already runs its maximum of concurrent runs."""

    reason = "TOO_MANY_RUNS"


class TooManyQueuedJobs(LimitExceeded):
    """Raised before an upload when the jobs waiting for a worker already reach the server's cap."""

    reason = "TOO_MANY_QUEUED_JOBS"


class TooManyWatches(LimitExceeded):
    """Raised at once when the server already streams its maximum of WatchJob calls."""

    reason = "TOO_MANY_WATCHES"


class TooManyReflectionStreams(LimitExceeded):
    """Raised at once when the server already serves its maximum of reflection streams."""

    reason = "TOO_MANY_REFLECTION_STREAMS"


class TooManyHealthWatches(VideodagError):
    """Raised at once when the server already streams its maximum of health watches.

    UNIMPLEMENTED, not RESOURCE_EXHAUSTED: it is the one refusal after which gRPC's client-side
    health checking treats the server as healthy instead of down (see `health_watches`)."""

    status_code = "UNIMPLEMENTED"
    reason = "TOO_MANY_HEALTH_WATCHES"


class TooManyJobUploads(LimitExceeded):
    """Raised at once when the server already receives its maximum of SubmitJob uploads."""

    reason = "TOO_MANY_UPLOADS"


class DiskFull(LimitExceeded):
    """Raised when the temp or data directory has no room left; nothing half-written stays."""

    reason = "DISK_FULL"


class UploadCorrupted(VideodagError):
    """Raised when the bytes that arrived differ from the declared size or checksum."""

    status_code = "DATA_LOSS"
    reason = "UPLOAD_CORRUPTED"


class NodeFailed(VideodagError):
    """Raised when a pipeline node fails on a frame and its policy is to fail the run, or when
    it could not be opened for the run at all (`opening`: no frame reached it, whatever its policy)."""

    status_code = "INTERNAL"
    reason = "NODE_FAILED"

    def __init__(
        self, pipeline_id: str, node_id: str, plugin: str, frame_index: int | None, cause: str,
        *, opening: bool = False,
    ) -> None:
        where = f"frame {frame_index}" if frame_index is not None else "a frame"
        what = "could not be opened for the run" if opening else f"failed on {where}"
        super().__init__(
            f"pipeline {pipeline_id!r} node {node_id!r} ({plugin}) {what}: {cause}",
            ErrorDetails(
                metadata={
                    "pipeline_id": pipeline_id,
                    "node_id": node_id,
                    "plugin": plugin,
                    # No frame when the node failed to open: the key is left out, never empty.
                    **({} if frame_index is None else {"frame_index": str(frame_index)}),
                }
            ),
        )
        self.pipeline_id = pipeline_id
        self.node_id = node_id
        self.plugin = plugin
        self.frame_index = frame_index
        self.cause = cause


class NodeTimedOut(NodeFailed):
    """Raised when one node call on one frame outlives the server's node time limit.

    INTERNAL like any plugin failure, not DEADLINE_EXCEEDED: the limit is the server's, the
    fault is the plugin's, and a caller retrying with a longer deadline would hang again.
    The run ends whatever the node's `on_error` policy: the hung call still holds the node.
    """

    reason = "NODE_TIMED_OUT"

    def __init__(
        self, pipeline_id: str, node_id: str, plugin: str, frame_index: int | None, limit_seconds: float,
        *, opening: bool = False,
    ) -> None:
        cause = (f"its open() took longer than the node time limit of {plain_number(limit_seconds)} s" if opening
                 else f"no result within the node time limit of {plain_number(limit_seconds)} s")
        super().__init__(pipeline_id, node_id, plugin, frame_index, cause, opening=opening)
        self.details.metadata = {**self.details.metadata, "node_timeout_seconds": plain_number(limit_seconds)}
        self.limit_seconds = limit_seconds


class DecoderDidNotStart(VideodagError):
    """Raised when a decoder process ends before it runs any decoder code: it never saw the
    video, so the server's set-up is at fault (its log has the process's error), not the file."""

    status_code = "INTERNAL"
    reason = "DECODER_DID_NOT_START"


class UnknownSamplingOptions(VideodagError):
    """Raised when a job asks for sampling a later release added: run without it, it would not
    be the run asked for. INTERNAL: releases sharing a job store disagree, nothing the caller
    did. Its reason is the generic INTERNAL, as the contract gives it none of its own."""

    status_code = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, options: tuple[tuple[str, object], ...]) -> None:
        named = ", ".join(f"{name}={value!r}" for name, value in options)
        super().__init__(f"the job asks for sampling options this release of the server does not know ({named}); "
                         "a newer release queued it, and only such a release can run it",
                         ErrorDetails(metadata={"unknown_sampling_options": ",".join(name for name, _ in options)}))


class DecoderKilled(VideodagError):
    """Raised when the decoder process was killed (SIGKILL) mid-run: by the out-of-memory killer
    or an operator, not by the file, which a crash (SIGSEGV, SIGABRT) would blame instead. The
    same call may well succeed once the server has memory to spare: UNAVAILABLE says retry."""

    status_code = "UNAVAILABLE"
    reason = "DECODER_KILLED"


class ServerOutOfResources(VideodagError):
    """Raised when the server could not get a thread, a process, memory or a file descriptor
    for the call (a container's pids or memory limit, its open-files limit): no fault of the
    request, nor a bug, and likely gone once other calls end. UNAVAILABLE says retry; the
    video is not to blame, though OpenCV's failure to open its codec makes it look unreadable."""

    status_code = "UNAVAILABLE"
    reason = "SERVER_OUT_OF_RESOURCES"


class StorageUnwritable(VideodagError):
    """The server cannot write where it keeps uploads: a read-only file system, permissions
    taken away. No fault of the request, and not a bug either: the operator's to fix. The
    folder is named in the server's log only (its paths are private)."""

    status_code = "INTERNAL"
    reason = "STORAGE_UNWRITABLE"


class StorageUnreadable(VideodagError):
    """The server cannot read its own stored copy of the video: its permissions deny the server's
    user (a data folder restored as another user). The operator's to fix, no fault of the video,
    which the caller would otherwise be told is not one OpenCV can decode."""

    status_code = "INTERNAL"
    reason = "STORAGE_UNREADABLE"


class VideoFileMissing(VideodagError):
    """The server's stored copy of the video was gone when its decoder came to open it: removed
    from the upload folder (a cleaner of temporary files, an operator). Not the video's fault,
    unlike VideoUnreadable, and the same upload sent again may well succeed: UNAVAILABLE."""

    status_code = "UNAVAILABLE"
    reason = "VIDEO_FILE_MISSING"


class FailedPrecondition(VideodagError):
    """Raised when the target is in the wrong state for the call (e.g. deleting a running job)."""

    status_code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class JobAlreadyFinished(FailedPrecondition):
    """Raised when cancelling a job that has already succeeded or failed."""

    reason = "JOB_FINISHED"

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} already finished ({state}); it cannot be cancelled",
                         ErrorDetails(metadata={"job_id": job_id, "state": state}))


class JobNotFinished(FailedPrecondition):
    """Raised when deleting a job that is still queued or running."""

    reason = "JOB_NOT_FINISHED"

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} is {state}; cancel it before deleting it",
                         ErrorDetails(metadata={"job_id": job_id, "state": state}))


class IdempotencyKeyReused(FailedPrecondition):
    """Raised when an idempotency key comes back with another submission than its job's: another
    pipeline, other sampling options, or another video (a size or SHA-256 declared, or a video
    uploaded, that is not its job's). Returning the job would tell the caller its video was
    queued when it was not."""

    reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str, job_id: str, pipeline_id: str, differs: str) -> None:
        """`differs`: "pipeline", "sampling" or "video"."""
        what = {
            "pipeline": f"with pipeline {pipeline_id!r}",
            "sampling": "with other sampling options than this submission's",
            "video": "of another video (its size or SHA-256 is not this submission's)",
        }[differs]
        super().__init__(
            f"idempotency key {key!r} was already used for job {job_id} {what}; use a new key for another "
            "submission, or the same pipeline, options and video to find that job",
            ErrorDetails(metadata={"job_id": job_id, "pipeline_id": pipeline_id, "differs": differs}),
        )


class RunCancelled(VideodagError):
    """Raised inside a run when its caller went away or cancelled it."""

    status_code = "CANCELLED"
    reason = "CANCELLED"


class DeadlineExceeded(VideodagError):
    """Raised when a run outlives its deadline or a time limit."""

    status_code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class UploadIdle(DeadlineExceeded):
    """Raised when an upload sends nothing for the server's idle limit: a stalled client
    would otherwise hold a run slot, a thread and a temp file for as long as it likes."""

    reason = "UPLOAD_IDLE"


class ServerDraining(VideodagError):
    """Raised for new work while the server shuts down; retry on another replica."""

    status_code = "UNAVAILABLE"
    reason = "SERVER_DRAINING"


class EndedByShutdown(ServerDraining):
    """Raised for a call still going when the shutdown's grace is over: the call's end, told to
    its client as a drain (retry on another replica) and logged as an end, not a refusal."""


class JobStoreUnavailable(VideodagError):
    """Raised when the job backend (Redis) cannot be reached: a passing outage, worth a retry."""

    status_code = "UNAVAILABLE"
    reason = "JOB_STORE_UNAVAILABLE"


class Unauthenticated(VideodagError):
    """Raised when a call carries no bearer token, or a wrong one."""

    status_code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"
