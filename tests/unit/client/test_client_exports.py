"""The public surface of `videodag_client` is locked: adding or dropping a name is a decision."""

from __future__ import annotations

import inspect
import types
import typing

import videodag_client

PUBLIC_NAMES = {
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
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(videodag_client.__all__) == PUBLIC_NAMES
    assert len(videodag_client.__all__) == len(PUBLIC_NAMES)


def test_every_public_attribute_is_exported() -> None:
    public_attributes = {
        name
        for name, value in vars(videodag_client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public_attributes == set(videodag_client.__all__)


def test_exported_classes_and_functions_claim_the_public_module() -> None:
    for name in videodag_client.__all__:
        member = getattr(videodag_client, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__ == "videodag_client", name


def test_every_error_class_is_a_videodag_error_with_its_own_status_code() -> None:
    error_classes = [
        getattr(videodag_client, name)
        for name in videodag_client.__all__
        if inspect.isclass(getattr(videodag_client, name))
        and issubclass(getattr(videodag_client, name), videodag_client.VideodagError)
        and name != "VideodagError"
    ]
    codes = [error_class.grpc_status_code for error_class in error_classes]
    assert len(codes) == len(set(codes)) == 16


def test_every_public_class_has_type_hints_tools_can_read() -> None:
    """Reported as this package's own, their string annotations were looked up here and failed
    (`typing.get_type_hints(FrameResult)`: NameError 'Any'), for dataclass tools and pydantic alike."""
    for name in videodag_client.__all__:
        member = getattr(videodag_client, name)
        if isinstance(member, type):
            typing.get_type_hints(member)  # raises NameError for a name it cannot find
    assert typing.get_type_hints(videodag_client.FrameResult)["result"] == dict[str, typing.Any]
