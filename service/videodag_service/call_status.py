"""Ending a call with the status of whatever went wrong: the one place errors meet gRPC."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from videodag_service import convert
from videodag_service.errors import RunCancelled, VideodagError

logger = logging.getLogger(__name__)


def status_name(error: BaseException) -> str:
    """The status code name a call ending with `error` reports (for metrics)."""
    if isinstance(error, VideodagError):
        return error.status_code
    return "CANCELLED" if isinstance(error, grpc.RpcError) else "INTERNAL"


def abort(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    """End the call with the error's status and `google.rpc` details; unexpected errors become INTERNAL."""
    if isinstance(error, VideodagError):
        if error.status_code in {"INTERNAL", "UNKNOWN"}:
            logger.error("call failed: %s", error)
        else:
            logger.info("request refused: %s: %s", error.status_code, error.message)
        status = convert.status_from_error(error)
    elif isinstance(error, grpc.RpcError):
        # The stream broke while we read it (client cancel, deadline, shutdown); nobody may hear this.
        logger.info("call ended while reading its stream: %s", error)
        status = convert.status_from_error(RunCancelled("the call was cancelled"))
    else:
        logger.exception("unexpected failure")
        status = convert.internal_status(f"internal error: {type(error).__name__}: {error}")
    rich = rpc_status.to_status(status)
    # Same as abort_with_status, spelled out so in-process test contexts handle it too.
    context.set_trailing_metadata(rich.trailing_metadata)
    context.abort(rich.code, rich.details)
    raise AssertionError("context.abort always raises")  # for type checkers: abort never returns
