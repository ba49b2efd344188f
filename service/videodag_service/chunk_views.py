"""Upload chunks handed to the servicer as views of the bytes gRPC received, not as messages.

After the config, every UploadAndRun and SubmitJob request carries only `chunk` (field 2,
bytes). On the wire such a message is the tag byte 0x12, the chunk's length as a varint,
then the chunk. Parsing it with protobuf copies the chunk into the message's arena, and
reading the field copies it again into a new bytes object: two copies of every byte
uploaded, on the thread that receives. `ChunkViewInterceptor` gives these two methods a
deserializer that returns a read-only memoryview of the chunk when a message has exactly
that shape, and the generated message otherwise (the config, an empty message, anything
unusual, which protobuf then judges as it judges any message). `client_streams` reads both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from videodag.v1 import video_pipeline_service_pb2
from videodag_service.method_handlers import rebuilt_handler

_SERVICE = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"].full_name
# The upload methods: their request messages share the shape `oneof { config = 1; bytes chunk = 2; }`.
UPLOAD_METHODS = frozenset({f"/{_SERVICE}/UploadAndRun", f"/{_SERVICE}/SubmitJob"})
_CHUNK_TAG = (2 << 3) | 2  # field 2, length-delimited
_MAX_VARINT_BYTES = 10

Deserializer = Callable[[bytes], Any]


def chunk_view(message: bytes) -> memoryview | None:
    """The chunk of a message that holds a chunk and nothing else, as a view; None for any other."""
    if not message or message[0] != _CHUNK_TAG:
        return None
    length = 0
    shift = 0
    offset = 1
    while offset < len(message) and offset <= _MAX_VARINT_BYTES:
        byte = message[offset]
        length |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return memoryview(message)[offset:] if offset + length == len(message) else None
        shift += 7
    return None


def chunks_as_views(parse: Deserializer) -> Deserializer:
    """A request deserializer: a chunk-only message as a view, any other parsed by `parse`."""

    def deserialize(message: bytes) -> Any:
        view = chunk_view(message)
        return parse(message) if view is None else view

    return deserialize


class ChunkViewInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Swaps the upload methods' request deserializer for `chunks_as_views` of it.

    An interceptor, because it sees the handler gRPC found whichever way the service was
    registered. The behaviour is not wrapped, so it costs nothing per message.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method not in UPLOAD_METHODS or handler.request_deserializer is None:
            return handler
        return rebuilt_handler(handler, deserializer=chunks_as_views(handler.request_deserializer))
