"""Reading a config-then-chunks client stream (UploadAndRun and SubmitJob share its shape).

Both request messages carry a `oneof` of `config` and `chunk` (typed loosely here, as the
two generated classes share no base): the config first, exactly once, then the video's
bytes in order. Order mistakes are INVALID_ARGUMENT. A chunk-only message may also arrive
as a memoryview of its chunk (`chunk_views`, which the server installs), and a message that
could not be parsed as an `UnparsedRequest` (`unparsed_requests`).

The end of the stream is ambiguous in gRPC's blocking API: a client that half-closed (the
whole upload) and one that cancelled both end the request iterator, and the cancel's own
report can trail that end by a moment. `ended_by_half_close` tells them apart where a
truncated upload must not be taken for a whole one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from videodag_service.errors import BadRequestStream, RunCancelled
from videodag_service.unparsed_requests import UnparsedRequest

# How long the end of a stream waits for a cancel's report: it comes from the same transport
# event as the end, so within a millisecond or two unless the process is very busy.
CANCEL_REPORT_GRACE_SECONDS = 0.1


class CallbackRegistry(Protocol):
    """What `ended_by_half_close` needs of a `grpc.ServicerContext`."""

    def add_callback(self, callback: Callable[[], None]) -> bool: ...


def first_config(requests: Iterator[Any]) -> Any:
    """The config of the stream's first message; BadRequestStream when it is missing."""
    first = next(requests, None)
    if first is None:
        raise BadRequestStream("the stream was empty; send a config message first, then the video's chunks")
    if isinstance(first, UnparsedRequest):
        raise first.error()
    if isinstance(first, memoryview) or first.HasField("chunk"):
        raise BadRequestStream("the first message must be the config; a chunk arrived first")
    if not first.HasField("config"):  # `{}` in grpcurl: a message with neither
        raise BadRequestStream("the first message must be the config; an empty message arrived (neither config "
                               "nor chunk set)")
    return first.config


def chunks(requests: Iterator[Any]) -> Iterator[bytes | memoryview]:
    """The video's bytes from the rest of the stream; BadRequestStream for a second config."""
    for request in requests:
        if isinstance(request, memoryview):
            yield request
        elif isinstance(request, UnparsedRequest):
            raise request.error()
        elif request.HasField("config"):
            raise BadRequestStream("the config was sent twice; send it once, as the first message")
        else:
            yield request.chunk


def ended_by_half_close(
    chunks: Iterator[bytes | memoryview], context: CallbackRegistry, grace_seconds: float = CANCEL_REPORT_GRACE_SECONDS
) -> Iterator[bytes | memoryview]:
    """`chunks`, raising RunCancelled in place of their end when the call ended there because
    the client cancelled it. Wrap the chunks before the first is read: the call's end is
    noticed from then on. A half-closed stream costs `grace_seconds` at its end."""
    call_ended = threading.Event()
    if not context.add_callback(call_ended.set):  # the call has ended already
        call_ended.set()
    yield from chunks
    # A call still open this long after its stream ended was half-closed by its client.
    if call_ended.wait(grace_seconds):
        raise RunCancelled("the call was cancelled before its upload was complete: by its client, by a connection "
                           "lost (no answer to keepalive pings), or by gRPC for a message over the server's "
                           "--max-message-bytes")
