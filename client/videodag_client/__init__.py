"""Typed Python client for the videodag service: upload a video, get per-frame results back.

    from videodag_client import FrameResult, RunOptions, VideodagClient

    with VideodagClient("localhost:50051") as client:
        with client.upload_and_run("clip.mp4", "player_tracking_v1", RunOptions(frame_stride=5)) as run:
            for event in run:
                if isinstance(event, FrameResult):
                    print(event.frame_index, event.result)

Every failure is a `VideodagError`; its subclasses are named after gRPC status codes.
Asyncio code uses `AsyncVideodagClient`, with the same calls as coroutines and async iterators.
"""

# First, before anything imports grpc: it quiets gRPC's own logging in the `videodag` command.
import videodag_client._grpc_logging  # noqa: F401

# isort: split
import inspect
import typing

from videodag_client._async import AsyncVideodagClient
from videodag_client._async_streams import AsyncJobWatch, AsyncRunStream
from videodag_client._client import DEFAULT_TARGET, RunStream, VideodagClient
from videodag_client._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ResourceInfo,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    VideodagError,
    from_grpc_error,
)
from videodag_client._events import (
    Event,
    FrameResult,
    NodeError,
    NodeTiming,
    RunSummary,
    UploadReceived,
    VideoOpened,
)
from videodag_client._job_values import Job, JobEvent, JobPage, JobState
from videodag_client._job_watch import JobWatch
from videodag_client._options import RunOptions
from videodag_client._pipelines import NodeInput, PipelineInfo, PipelineNode, PipelineOutput
from videodag_client._upload import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TARGET",
    "MAX_CHUNK_SIZE",
    "Aborted",
    "AlreadyExists",
    "AsyncJobWatch",
    "AsyncRunStream",
    "AsyncVideodagClient",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "FrameResult",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobPage",
    "JobState",
    "JobWatch",
    "NodeError",
    "NodeInput",
    "NodeTiming",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PipelineInfo",
    "PipelineNode",
    "PipelineOutput",
    "ResourceExhausted",
    "ResourceInfo",
    "RunOptions",
    "RunStream",
    "RunSummary",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "UploadReceived",
    "VideoOpened",
    "VideodagClient",
    "VideodagError",
    "from_grpc_error",
]


def _resolve_annotations(kind: type) -> None:
    """Turn a class's own annotations from the strings `from __future__ import annotations` left
    into the types they name, while its module is still the one they were written in: moved to
    this package, `typing.get_type_hints` (dataclass tools, pydantic) would look the names up
    here and fail (`Any`, `datetime`, `ClassVar` are not this package's)."""
    own = inspect.get_annotations(kind)
    if own:
        hints = typing.get_type_hints(kind, include_extras=True)
        kind.__annotations__ = {name: hints[name] for name in own}


# Public names report this package as their home, so reprs and docs do not leak private modules.
for _name in __all__:
    _member = globals()[_name]
    if getattr(_member, "__module__", "").startswith("videodag_client._"):
        if isinstance(_member, type):
            _resolve_annotations(_member)
        _member.__module__ = __name__
del _name, _member
