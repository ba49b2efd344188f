"""The health service, with its Watch streams capped.

Health checks need no token (a load balancer has none), and each open Watch stream counts
against the calls the server serves at once: a client with no token opening enough of them
would have every other call refused, health checks and authenticated callers alike. The server's
call budget covers the cap (`server`), and each open watch holds a server thread (the request
context interceptor runs every call in one), so the cap stays small.

Past the cap a Watch is refused at once as UNIMPLEMENTED (reason TOO_MANY_HEALTH_WATCHES):
gRPC's client-side health checking (gRFC A17) then treats the server as healthy without
watching it, where any other refusal would have it treat a healthy server as down, so no
one holding the slots can make the server look down to the others. `Check` still answers.

`List` (in health.proto since 2025) is answered too: grpcio-health-checking advertises it but
leaves it unimplemented, and each call, open to anyone, would log an ERROR with a traceback. The
library offers no public way to read every status, so `List` (and `Check`'s message naming the
services) read its private `_lock` and `_server_status`; tests/unit/servicer/test_health_watches.py
fails if an upgrade of grpcio-health-checking renames them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2

from videodag_service.call_slots import CallSlots
from videodag_service.errors import ErrorDetails, TooManyHealthWatches
from videodag_service.wording import counted

HEALTH_WATCH_RETRY_SECONDS = 5.0


def too_many_health_watches(capacity: int) -> TooManyHealthWatches:
    return TooManyHealthWatches(
        f"the server already streams its maximum of {counted(capacity, 'health watch', 'health watches')}; "
        "use Check, or retry shortly",
        ErrorDetails(metadata={"max_health_watches": str(capacity)}, retry_after_seconds=HEALTH_WATCH_RETRY_SECONDS),
    )


# grpcio-health-checking ships no type information (no py.typed): to mypy its servicer is Any.
class CappedHealthServicer(health.HealthServicer):  # type: ignore[misc]
    """gRPC's health service; at most `max_watches` Watch streams open at once."""

    def __init__(self, max_watches: int) -> None:
        super().__init__()
        self._watch_slots = CallSlots(max_watches, too_many_health_watches)

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[health_pb2.HealthCheckResponse | None], None] | None = None,
    ) -> Iterator[health_pb2.HealthCheckResponse] | None:
        self._watch_slots.hold_until_the_call_ends(context)
        blocking_watcher: Iterator[health_pb2.HealthCheckResponse] | None = super().Watch(
            request, context, send_response_callback
        )
        return blocking_watcher

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        response = super().Check(request, context)
        if context.code() is grpc.StatusCode.NOT_FOUND:  # the library sets the code with no message
            context.set_details(f"no health status for service {request.service[:128]!r}; "
                                f"the services are: {', '.join(repr(name) for name in self._services())}")
        return response

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service's status, as `Check` would give it."""
        with self._lock:
            statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )

    def _services(self) -> list[str]:
        with self._lock:
            return sorted(self._server_status)
