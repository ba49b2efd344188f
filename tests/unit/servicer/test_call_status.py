"""What a call that ended under its handler is reported as: its own end, not an answer nobody hears."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from videodag_service.call_status import abort, status_name
from videodag_service.errors import EmptyUpload, ServerDraining


class _EndedCall:
    """A call gRPC has ended already (its client cancelled it, or gRPC's cancel at the end of a
    shutdown's grace); records what `abort` sends."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None  # no deadline: not ended by one

    def set_trailing_metadata(self, metadata: Any) -> None:
        return None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise RuntimeError(details)


def test_an_answer_to_an_ended_call_counts_as_its_cancel() -> None:
    """grpcurl's stream, half-closed as gRPC refused its message for its size, was logged and
    counted INVALID_ARGUMENT "the upload is empty", an answer its client never got."""
    context = _EndedCall()
    refusal = EmptyUpload("the upload is empty: no video bytes arrived")
    assert status_name(refusal, context) == "CANCELLED"  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"by its client, by a connection lost .*, or by gRPC for a message over"):
        abort(context, refusal)  # type: ignore[arg-type]
    assert context.code is grpc.StatusCode.CANCELLED


def test_a_call_the_shutdown_ended_stays_unavailable() -> None:
    """gRPC's cancel of the calls left at the end of the grace also leaves them inactive: they
    were counted as cancelled by their clients."""
    context = _EndedCall()
    drained = ServerDraining("the server shut down before the upload ended; retry on another replica")
    assert status_name(drained, context) == "UNAVAILABLE"  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="the server shut down"):
        abort(context, drained)  # type: ignore[arg-type]
    assert context.code is grpc.StatusCode.UNAVAILABLE
