"""A burst of calls larger than the server's threads: the calls beyond them wait for a thread
(briefly: every long call is capped within the threads) rather than being refused by gRPC with
a bare RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded", health checks included, which a
load balancer takes for a server in trouble."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ServerFactory

from videodag_service.health_watches import CappedHealthServicer

BURST = 140  # nearly four times the 37 threads


def test_a_burst_of_calls_beyond_the_threads_is_answered_not_refused(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each check holds its thread a moment, as the calls of a burst do on a loaded machine.
    answer_now = CappedHealthServicer.Check

    def answer_slowly(self: CappedHealthServicer, request: Any, context: Any) -> Any:
        time.sleep(0.1)
        return answer_now(self, request, context)

    monkeypatch.setattr(CappedHealthServicer, "Check", answer_slowly)
    # 1 run, no line, 1 watch, 1 upload, 1 health watch, 1 reflection stream: 37 threads.
    server = make_server(max_concurrent_runs=1, max_waiting_runs=0, max_job_watches=1, max_job_uploads=1,
                         max_health_watches=1, max_reflection_streams=1)
    channels = [grpc.insecure_channel(server.target) for _ in range(8)]
    try:
        stubs = [health_pb2_grpc.HealthStub(channel) for channel in channels]
        for stub in stubs:  # connected before the burst, which then comes at once
            stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        calls = [stubs[index % len(stubs)].Check.future(health_pb2.HealthCheckRequest(), timeout=60)
                 for index in range(BURST)]
        answers = [_answer(call) for call in calls]
    finally:
        for channel in channels:
            channel.close()
    assert [answer for answer in answers if answer != health_pb2.HealthCheckResponse.SERVING] == []


def _answer(call: grpc.Future) -> object:
    try:
        return call.result().status
    except grpc.RpcError as error:
        return (error.code(), error.details())
