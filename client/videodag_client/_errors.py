"""One exception tree for every failure the server reports, mapped once from `grpc.RpcError`.

Class names are status names, so `except NotFound` reads like the contract's error table.
Each class knows its `grpc.StatusCode`; `from_grpc_error` picks the class and unpacks the
`google.rpc.Status` details the server attaches (ErrorInfo, BadRequest, ResourceInfo,
RetryInfo). The same mapping runs inside the UploadAndRun stream, so an error that ends
the stream after some frames surfaces as the same exception as an error on the first byte.

    VideodagError
    ├── Cancelled               CANCELLED
    ├── Unknown                 UNKNOWN (also any code without a class of its own)
    ├── InvalidArgument         INVALID_ARGUMENT
    ├── DeadlineExceeded        DEADLINE_EXCEEDED
    ├── NotFound                NOT_FOUND
    ├── AlreadyExists           ALREADY_EXISTS
    ├── PermissionDenied        PERMISSION_DENIED
    ├── ResourceExhausted       RESOURCE_EXHAUSTED
    ├── FailedPrecondition      FAILED_PRECONDITION
    ├── Aborted                 ABORTED
    ├── OutOfRange              OUT_OF_RANGE
    ├── Unimplemented           UNIMPLEMENTED
    ├── Internal                INTERNAL
    ├── Unavailable             UNAVAILABLE
    ├── DataLoss                DATA_LOSS
    └── Unauthenticated         UNAUTHENTICATED
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypedDict

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# The longest `retry_after`; a longer hint from the server is read as this. A Duration may say ten
# thousand years, and a malformed one more: `time.sleep` and `Event.wait` given either overflow,
# and no videodag limit takes more than a day to free up.
_MAX_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True)
class FieldViolation:
    """A request field the server rejected, and why (from `google.rpc.BadRequest`)."""

    field: str
    description: str


@dataclass(frozen=True)
class ResourceInfo:
    """The resource an error is about, such as the unknown pipeline (`google.rpc.ResourceInfo`)."""

    resource_type: str
    resource_name: str
    description: str = ""


class StatusDetails(TypedDict, total=False):
    """The keyword arguments of `VideodagError` that come from `google.rpc.Status` details."""

    reason: str
    domain: str
    metadata: dict[str, str]
    field_violations: tuple[FieldViolation, ...]
    resource: ResourceInfo
    retry_after: float


class VideodagError(Exception):
    """Base of every error the server reports; catch it to handle any failed call.

    `reason` is the server's stable UPPER_SNAKE identifier (`ErrorInfo.reason`, such as
    "PIPELINE_NOT_FOUND") to branch on; `message` is for people. `retry_after` is in
    seconds (0 to a day, whatever the server sent) and set only when the server sent a
    `RetryInfo` hint. A detail that does not parse is left out: the code and message stand.
    """

    grpc_status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    _class_by_code: ClassVar[dict[grpc.StatusCode, type[VideodagError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        VideodagError._class_by_code.setdefault(cls.grpc_status_code, cls)

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        resource: ResourceInfo | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # A code with no class of its own lands on Unknown but keeps its real code here.
        self.code: grpc.StatusCode = code or self.grpc_status_code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.resource = resource
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class Cancelled(VideodagError):
    """Raised when the call was cancelled, usually by the caller closing the stream."""

    grpc_status_code = grpc.StatusCode.CANCELLED


class Unknown(VideodagError):
    """Raised for an error the server did not classify, or a status code with no class here."""

    grpc_status_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(VideodagError):
    """Raised when the request is wrong (bad options, unreadable video); retrying it unchanged fails."""

    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(VideodagError):
    """Raised when the call's timeout passed before the run finished."""

    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(VideodagError):
    """Raised when the pipeline (or another named resource) does not exist on the server."""

    grpc_status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VideodagError):
    """Raised when creating something that already exists."""

    grpc_status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(VideodagError):
    """Raised when the credentials are valid but not allowed to make this call."""

    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(VideodagError):
    """Raised when a limit was hit: upload size, video duration or size, concurrent runs, disk."""

    grpc_status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(VideodagError):
    """Raised when the server is not in a state to perform the call."""

    grpc_status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(VideodagError):
    """Raised when the call was aborted by a concurrency conflict; retrying may succeed."""

    grpc_status_code = grpc.StatusCode.ABORTED


class OutOfRange(VideodagError):
    """Raised when a value is past the valid range."""

    grpc_status_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(VideodagError):
    """Raised when the server does not implement the method (an older server)."""

    grpc_status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(VideodagError):
    """Raised when a plugin failed or the server broke; the message names the node and frame."""

    grpc_status_code = grpc.StatusCode.INTERNAL


class Unavailable(VideodagError):
    """Raised when the server cannot be reached or is draining for shutdown; retrying may succeed."""

    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(VideodagError):
    """Raised when the bytes that arrived differ from the declared size or checksum."""

    grpc_status_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(VideodagError):
    """Raised when the server requires credentials and got none, or bad ones."""

    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


def from_grpc_error(error: grpc.RpcError) -> VideodagError:
    """Turns a failed call into the exception named after its status code, with its details.

    Errors without a status (a `grpc.RpcError` that is not a `grpc.Call`) become `Unknown`.
    """
    if not isinstance(error, grpc.Call):
        return Unknown(str(error) or type(error).__name__)
    code = error.code() or grpc.StatusCode.UNKNOWN
    message = error.details() or ""
    error_class = VideodagError._class_by_code.get(code, Unknown)
    details = _unpack_details(_rich_status(error))
    if code is grpc.StatusCode.UNAVAILABLE and not details.get("reason") and is_tls_handshake_failure(message):
        details["reason"] = TLS_HANDSHAKE_FAILED
    return error_class(message, code=code, **details)


TLS_HANDSHAKE_FAILED = "TLS_HANDSHAKE_FAILED"
"""The client's own reason for gRPC's UNAVAILABLE when the TLS handshake failed (a certificate
not trusted, or for another name; the server's TLS not what the client speaks). It fails the
same way until the setup changes: told apart from the UNAVAILABLE of a server down, which a
caller retries."""

# gRPC's words for a failed handshake, as its C core writes them into the status message.
_TLS_FAILURE_MARKS = ("handshake", "ssl_error", "certificate_verify", "tsi_", "verification check failed",
                      "is not in peer certificate")


def is_tls_handshake_failure(message: str) -> bool:
    """Whether gRPC's own message (an UNAVAILABLE with no reason of the server's: one that has a
    reason may say anything, a video named "handshake_test.mp4" say) tells of a failed handshake."""
    lowered = message.lower()
    return any(mark in lowered for mark in _TLS_FAILURE_MARKS)


def error_from_status(status: status_pb2.Status) -> VideodagError:
    """The exception a call ending with this status raises (a failed job's `error`): same class,
    same details."""
    code = status_code(status.code)
    error_class = VideodagError._class_by_code.get(code, Unknown)
    return error_class(status.message, code=code, **_unpack_details(status))


def status_code(number: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` of a `google.rpc.Status` code; UNKNOWN for a number gRPC has not."""
    return _STATUS_CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


_STATUS_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _rich_status(call: grpc.Call) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(call)
    except ValueError:
        # The details trailer disagrees with the call's own code or message (a proxy rewrote
        # one of them): the call's status is what happened, so the details are dropped.
        return None
    except DecodeError:
        # The details trailer is not a Status at all: the call's code and message still say what happened.
        return None


def _unpack_details(status: status_pb2.Status | None) -> StatusDetails:
    """Reads the `google.rpc` detail messages this client understands; others are ignored, and so
    is one that does not parse as the type it names: the error is still the server's, with its
    code and message, rather than a protobuf DecodeError escaping `except VideodagError`."""
    unpacked: StatusDetails = {}
    if status is None:
        return unpacked
    for detail in status.details:
        try:
            _unpack_detail(detail, unpacked)
        except DecodeError:
            continue
    return unpacked


def _unpack_detail(detail: any_pb2.Any, unpacked: StatusDetails) -> None:
    """Adds one detail to `unpacked`; DecodeError when its bytes are not the type its URL names."""
    error_info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    resource_info = error_details_pb2.ResourceInfo()
    retry_info = error_details_pb2.RetryInfo()
    if detail.Unpack(error_info):
        unpacked["reason"] = error_info.reason
        unpacked["domain"] = error_info.domain
        unpacked["metadata"] = dict(error_info.metadata)
    elif detail.Unpack(bad_request):
        unpacked["field_violations"] = tuple(
            FieldViolation(v.field, v.description) for v in bad_request.field_violations
        )
    elif detail.Unpack(resource_info):
        unpacked["resource"] = ResourceInfo(
            resource_info.resource_type, resource_info.resource_name, resource_info.description
        )
    elif detail.Unpack(retry_info):
        unpacked["retry_after"] = _retry_after_seconds(retry_info.retry_delay)


def _retry_after_seconds(delay: duration_pb2.Duration) -> float:
    """The hint in seconds, from 0 (a delay passed already: retry now) to a day. Counted from the
    message's own integers: `ToTimedelta` overflows on a delay past a Duration's range."""
    seconds = (delay.seconds * 1_000_000_000 + delay.nanos) / 1_000_000_000
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def client_closed_error() -> FailedPrecondition:
    """What a call on a closed client raises, and a call its closing cancelled."""
    return FailedPrecondition("the client is closed: make a new client", reason="CLIENT_CLOSED")
