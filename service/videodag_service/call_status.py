"""Ending a call with the status of whatever went wrong: the one place errors meet gRPC."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from videodag_service import convert
from videodag_service.errors import (
    DeadlineExceeded,
    DecoderKilled,
    EndedByShutdown,
    RunCancelled,
    ServerDraining,
    ServerOutOfResources,
    VideodagError,
    VideoFileMissing,
)
from videodag_service.observability.call_deadline import ended_by_its_deadline
from videodag_service.resource_errors import out_of_resources

logger = logging.getLogger(__name__)

# What a call that ended under its handler is said to have ended by, in the log.
CALL_ENDED_MESSAGE = ("the call was cancelled: by its client, by a connection lost (no answer to keepalive "
                      "pings), or by gRPC for a message over the server's --max-message-bytes")


def status_name(error: BaseException, context: grpc.ServicerContext | None = None) -> str:
    """The status code name a call ending with `error` reports (for metrics)."""
    if isinstance(error, VideodagError):
        return _broken_stream_error(context).status_code if _unheard(error, context) else error.status_code
    if (resource_error := out_of_resources(error)) is not None:
        return resource_error.status_code
    return _broken_stream_error(context).status_code if isinstance(error, grpc.RpcError) else "INTERNAL"


def _unheard(error: VideodagError, context: grpc.ServicerContext | None) -> bool:
    """An answer other than the call's own end (a cancel, a deadline, the server's shutdown, which
    gRPC's cancel of the calls left at the end of the grace makes inactive) to a call that has ended."""
    return (context is not None and not isinstance(error, RunCancelled | DeadlineExceeded | ServerDraining)
            and not context.is_active())


def _broken_stream_error(context: grpc.ServicerContext | None) -> VideodagError:
    """Why a call ended under its handler: gRPC says nothing (a bare RpcError, or a stream that
    just ends), but a call at its deadline was ended by the deadline, and any other by its
    client, the server's shutdown, or gRPC's refusal of a message over the size limit (which
    only the client hears of, as RESOURCE_EXHAUSTED)."""
    if context is not None and ended_by_its_deadline(context):
        return DeadlineExceeded("the call's deadline passed before its answer")
    return RunCancelled(CALL_ENDED_MESSAGE)


def abort(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    """End the call with the error's status and `google.rpc` details; unexpected errors become INTERNAL."""
    error = out_of_resources(error) or error
    if isinstance(error, VideodagError) and _unheard(error, context):
        # Nobody hears this answer: the call ended first. Its end is what counts, and the answer is
        # often an echo of that end (a stream cut for an oversized message reads as an empty upload).
        ended = _broken_stream_error(context)
        logger.info("call ended before its answer: %s: %s", ended.status_code, ended.logged_message)
        logger.debug("the answer nobody hears: %s: %s", error.status_code, error.logged_message)
        status = convert.status_from_error(ended)
    elif isinstance(error, VideodagError):
        if error.status_code in {"INTERNAL", "UNKNOWN"}:
            logger.error("call failed: %s", error.logged_message)
        elif isinstance(error, VideoFileMissing | DecoderKilled | ServerOutOfResources):  # the server's trouble
            logger.warning("call failed: %s: %s", error.status_code, error.logged_message)
        elif isinstance(error, RunCancelled | EndedByShutdown) or type(error) is DeadlineExceeded:  # the call's end
            logger.info("call ended: %s: %s", error.status_code, error.logged_message)
        else:
            logger.info("request refused: %s: %s", error.status_code, error.logged_message)
        status = convert.status_from_error(error)
    elif isinstance(error, grpc.RpcError):
        # The stream broke while we read it (client cancel, deadline, shutdown); nobody may hear this.
        ended = _broken_stream_error(context)
        logger.info("call ended while reading its stream: %s: %s", ended.status_code, ended.message)
        status = convert.status_from_error(ended)
    else:
        logger.exception("unexpected failure")
        status = convert.internal_status(f"internal error: {type(error).__name__}: {error}")
    rich = rpc_status.to_status(status)
    # Same as abort_with_status, spelled out so in-process test contexts handle it too.
    context.set_trailing_metadata(rich.trailing_metadata)
    context.abort(rich.code, rich.details)
    raise AssertionError("context.abort always raises")  # for type checkers: abort never returns
