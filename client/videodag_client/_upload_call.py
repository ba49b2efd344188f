"""The start and the end of a call that uploads a video: UploadAndRun and SubmitJob alike.

Both check the chunk size and the client first, build their config (options that cannot be
sent fail before the file is opened), open and measure the upload, describe it in the config,
then start the call with the request stream. When the call fails, both raise the upload's own
error before gRPC's account of it. Apart from the client and the job calls, which differ only
in the request they send and in what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from videodag.v1 import run_pb2
from videodag_client._errors import VideodagError, client_closed_error, from_grpc_error
from videodag_client._upload import (
    MAX_CHUNK_SIZE,
    ChunkedRequests,
    PathOrFile,
    UploadAbandoned,
    UploadFile,
    UploadProgress,
    describe_upload,
    open_upload,
    upload_abandoned,
)

CallT = TypeVar("CallT")


def start_upload_call(
    path_or_file: PathOrFile,
    *,
    check_open: Callable[[], None],
    first_request: Callable[[], tuple[Message, run_pb2.RunConfig]],
    encode_chunk: Callable[[bytes], bytes],
    start_call: Callable[[ChunkedRequests], CallT],
    chunk_size: int,
    declare_size: bool,
    checksum: bool,
    on_upload_progress: UploadProgress | None,
    check_upload: Callable[[UploadFile], None] | None = None,
) -> tuple[CallT, ChunkedRequests]:
    """Starts an uploading call; returns it with its request stream.

    `first_request()` builds the config request and gives the RunConfig in it, which the upload
    is described in once opened. `check_upload` may refuse the opened upload before anything
    is sent; `start_call(requests)` starts the call. The file is closed on every failure.
    """
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")
    check_open()
    request, config = first_request()
    upload = _open_unless_closed(path_or_file, check_open, declare_size=declare_size, checksum=checksum)
    if check_upload is not None:
        try:
            check_upload(upload)
        except BaseException:
            upload.close()
            raise
    describe_upload(config, upload)
    requests = ChunkedRequests(request.SerializeToString(), encode_chunk, upload, chunk_size, on_upload_progress)
    try:
        call = start_call(requests)
    except BaseException:
        requests.close()
        raise
    return call, requests


def _open_unless_closed(
    path_or_file: PathOrFile, check_open: Callable[[], None], *, declare_size: bool, checksum: bool
) -> UploadFile:
    """`open_upload`, whose checksum pass (a whole read of the file before the call starts:
    minutes for a large one on a slow share) stops at its next read once the client is closed
    from another thread, as it stops for an asyncio caller's cancel (`upload_abandoned`)."""
    def closed() -> bool:
        try:
            check_open()
        except VideodagError:
            return True
        return False

    abandoned_otherwise = upload_abandoned.get()
    abandoning = upload_abandoned.set(lambda: abandoned_otherwise() or closed())
    try:
        return open_upload(path_or_file, declare_size=declare_size, checksum=checksum)
    except UploadAbandoned:
        if closed():  # the client's close: its own error alone, as every call after it raises
            raise client_closed_error() from None
        raise
    finally:
        upload_abandoned.reset(abandoning)


def upload_call_error(
    error: grpc.RpcError, requests: ChunkedRequests, client_closed: Callable[[], bool]
) -> BaseException:
    """What a failed uploading call raises (`from error`).

    Reading the file (or the progress callback) failing in gRPC's thread is reported there as
    UNKNOWN: the original error says what happened. A call the closing client cancelled gets
    the client's error, as gRPC's "Locally cancelled" says less. Anything else is the status,
    mapped.
    """
    if requests.error is not None:
        return requests.error
    if error.code() is grpc.StatusCode.CANCELLED and client_closed():
        return client_closed_error()
    return from_grpc_error(error)
