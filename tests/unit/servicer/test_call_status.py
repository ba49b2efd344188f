"""What a call that ended under its handler is reported as: its own end, not an answer nobody hears."""

from __future__ import annotations

import grpc
import pytest

from fakes.servicer_context import CallAborted, FakeServicerContext
from videodag_service.call_status import abort, status_name
from videodag_service.errors import EmptyUpload, ServerDraining


def _ended_call() -> FakeServicerContext:
    """A call gRPC has ended already (its client cancelled it, or gRPC's cancel at the end of a
    shutdown's grace), with no deadline: not ended by one."""
    return FakeServicerContext(active=False)


def test_an_answer_to_an_ended_call_counts_as_its_cancel() -> None:
    """grpcurl's stream, half-closed as gRPC refused its message for its size, was logged and
    counted INVALID_ARGUMENT "the upload is empty", an answer its client never got."""
    context = _ended_call()
    refusal = EmptyUpload("the upload is empty: no video bytes arrived")
    assert status_name(refusal, context) == "CANCELLED"
    with pytest.raises(CallAborted, match=r"by its client, by a connection lost .*, or by gRPC for a message over"):
        abort(context, refusal)
    assert context.code is grpc.StatusCode.CANCELLED


def test_a_call_the_shutdown_ended_stays_unavailable() -> None:
    """gRPC's cancel of the calls left at the end of the grace also leaves them inactive: they
    were counted as cancelled by their clients."""
    context = _ended_call()
    drained = ServerDraining("the server shut down before the upload ended; retry on another replica")
    assert status_name(drained, context) == "UNAVAILABLE"
    with pytest.raises(CallAborted, match="the server shut down"):
        abort(context, drained)
    assert context.code is grpc.StatusCode.UNAVAILABLE
