"""Rebuilding a gRPC method handler with another request deserializer or wrapped behaviour.

A server interceptor that changes how a method's requests are parsed, or what runs around its
behaviour, must build a new handler of the same kind (unary or streaming, each way), since
gRPC's handlers are immutable and each kind has its own factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]

# The handler's attribute holding the behaviour, for each kind, and the factory of that kind.
_KINDS: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def rebuilt_handler(
    handler: grpc.RpcMethodHandler,
    *,
    wrap: Callable[[Behavior, str], Behavior] | None = None,
    deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour passed through `wrap(behavior, kind)` (kind: "unary_unary",
    "unary_stream", "stream_unary" or "stream_stream") and its request deserializer replaced by
    `deserializer`; what is not given stays as it was."""
    for kind, factory in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            return factory(
                behavior if wrap is None else wrap(behavior, kind),
                deserializer if deserializer is not None else handler.request_deserializer,
                handler.response_serializer,
            )
    return handler
