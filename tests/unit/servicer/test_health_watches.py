"""The health service's `List` and `Check`'s message read grpcio-health-checking's private `_lock` and
`_server_status`, for want of a public way to read every status: these tests fail, naming them, when
an upgrade of the library renames or reshapes them."""

from __future__ import annotations

from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2

from videodag_service.health_watches import CappedHealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "videodag.v1.VideoPipelineService"


class _Context:
    """What `Check` uses of a servicer context: the code the library sets, and the details."""

    def __init__(self) -> None:
        self.status_code: grpc.StatusCode | None = None
        self.details: str | None = None

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status_code = code

    def code(self) -> grpc.StatusCode | None:
        return self.status_code

    def set_details(self, details: str) -> None:
        self.details = details


def test_the_library_keeps_its_statuses_where_list_reads_them() -> None:
    servicer = health.HealthServicer()
    lock = getattr(servicer, "_lock", None)  # getattr: a missing one fails the assertion, naming it
    statuses = getattr(servicer, "_server_status", None)
    assert lock is not None and callable(getattr(lock, "__enter__", None)), (
        "grpcio-health-checking no longer has HealthServicer._lock: health_watches.List reads it"
    )
    assert isinstance(statuses, dict), (
        "grpcio-health-checking no longer keeps HealthServicer._server_status as a dict: health_watches.List reads it"
    )
    servicer.set(SERVICE, NOT_SERVING)
    assert statuses == {"": SERVING, SERVICE: NOT_SERVING}, "HealthServicer.set no longer records in _server_status"


def test_list_answers_every_status_set() -> None:
    servicer = CappedHealthServicer(max_watches=1)
    servicer.set(SERVICE, NOT_SERVING)
    response = servicer.List(health_pb2.HealthListRequest(), cast(grpc.ServicerContext, _Context()))
    assert {name: status.status for name, status in response.statuses.items()} == {"": SERVING, SERVICE: NOT_SERVING}


def test_check_of_an_unknown_service_names_the_services_there_are() -> None:
    servicer = CappedHealthServicer(max_watches=1)
    servicer.set(SERVICE, SERVING)
    context: Any = _Context()
    servicer.Check(health_pb2.HealthCheckRequest(service="nothing"), context)
    assert context.status_code is grpc.StatusCode.NOT_FOUND
    assert context.details == f"no health status for service 'nothing'; the services are: '', '{SERVICE}'"
