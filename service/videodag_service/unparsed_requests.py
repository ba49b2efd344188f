"""Request messages protobuf cannot parse, refused as INVALID_ARGUMENT saying why.

gRPC answers a request its deserializer cannot parse with INTERNAL "Exception deserializing
request!" and logs an ERROR with a traceback: the client is told the server is broken, and
any client can fill the log. Such a request is the client's mistake, made by hand-built or
foreign-language messages (a Latin-1 file name in a string field, a cut chunk message).
`UnparsedRequestInterceptor` gives each method of the service a deserializer that returns
an `UnparsedRequest` in place of raising: a unary request is refused before its handler
runs, and a request stream's reader (`client_streams`) refuses it where it comes, so the
upload it interrupts is dropped as for any other bad stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from videodag.v1 import video_pipeline_service_pb2
from videodag_service.call_status import abort
from videodag_service.errors import MalformedRequest
from videodag_service.method_handlers import rebuilt_handler

_SERVICE = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"].full_name

Deserializer = Callable[[bytes], Any]
Behavior = Callable[[Any, grpc.ServicerContext], Any]


class UnparsedRequest:
    """A request message that could not be parsed, in place of the message."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def error(self) -> MalformedRequest:
        return MalformedRequest(f"malformed request: {self.problem}")


def tolerant(parse: Deserializer) -> Deserializer:
    """`parse`, returning an UnparsedRequest where it would raise DecodeError."""

    def deserialize(message: bytes) -> Any:
        try:
            return parse(message)
        except DecodeError as error:
            return UnparsedRequest(str(error))

    return deserialize


def refusing_unparsed(behavior: Behavior) -> Behavior:
    """A unary-request handler that ends the call with the parse error instead of running."""

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, UnparsedRequest):
            abort(context, request.error())
        return behavior(request, context)

    return handle


class UnparsedRequestInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Installs `tolerant` deserializers on the service's methods (not on health or reflection)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if (handler is None or handler.request_deserializer is None
                or not handler_call_details.method.startswith(f"/{_SERVICE}/")):
            return handler
        return rebuilt_handler(
            handler,
            # A request stream is checked by its reader (`client_streams`), message by message.
            wrap=lambda behavior, kind: refusing_unparsed(behavior) if kind.startswith("unary_") else behavior,
            deserializer=tolerant(handler.request_deserializer),
        )
