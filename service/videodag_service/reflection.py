"""Server reflection under both of its names: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

grpcio-reflection serves only v1alpha (grpc/grpc#38576). grpcurl and grpcui try v1 first and
fall back, but clients built on grpc-java's `ProtoReflectionServiceV1`, nice-grpc and other
tools that follow the stable protocol ask only v1, and would find no reflection here. The two
versions are the same protocol: v1 only renamed the package, so every message has the same
fields and the same wire form. The v1 method is therefore the v1alpha servicer itself, reached
under the v1 path, and the v1 file is the v1alpha file with its package renamed, added to the
default descriptor pool so that v1 is listed and can be described like every other service.

The servicer is grpcio-reflection's, reached only through what it documents (its pool
argument and its one RPC): it searches a pool that also finds methods and enum values by the
names clients ask for (`reflection_symbols`), reads requests that end once none has come for
a while (`reflection_idle`), and its answers are passed on with the contract's files given
their .proto comments (`reflection_comments`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from videodag_service.call_slots import CallSlots
from videodag_service.errors import ErrorDetails, TooManyReflectionStreams
from videodag_service.reflection_comments import CommentedFiles
from videodag_service.reflection_idle import RequestsUntilIdle
from videodag_service.reflection_symbols import SymbolLookupPool
from videodag_service.wording import counted

REFLECTION_RETRY_SECONDS = 5.0

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{_V1_PACKAGE}.ServerReflection"
_V1_FILE_NAME = "grpc_reflection/v1/reflection.proto"


def enable_reflection(service_names: Iterable[str], server: grpc.Server, max_streams: int,
                      idle_seconds: float) -> None:
    """Serve reflection of `service_names` and of itself, under the v1 and the v1alpha name, at
    most `max_streams` streams open at once under both, each ended once it has had no request
    for `idle_seconds` (0: never)."""
    _register_v1_file()
    servicer = _CappedReflectionServicer(
        (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME), max_streams, idle_seconds,
        CommentedFiles.of_the_contract(descriptor_pool.Default()),
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": info}),)
    )


def too_many_reflection_streams(capacity: int) -> TooManyReflectionStreams:
    return TooManyReflectionStreams(
        f"the server already serves its maximum of {counted(capacity, 'reflection stream', 'reflection streams')}; "
        "retry shortly",
        ErrorDetails(metadata={"max_reflection_streams": str(capacity)}, retry_after_seconds=REFLECTION_RETRY_SECONDS),
    )


class _CappedReflectionServicer(reflection.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, with its streams capped and ended when idle, methods and
    enum values found, and the contract's files commented.

    A reflection stream stays open, waiting for its next request, as long as its client keeps
    it (grpcui keeps one a session) or until it has been idle for the limit, and holds a server
    thread meanwhile: without a cap, idle ones, which anyone may open on a server without
    tokens, can take every call slot and leave none for anything else, health checks included.
    The cap is part of the server's call budget (`server`); the idle limit keeps clients that
    hold their stream without asking, as grpcurl does for its whole command, from filling it."""

    def __init__(self, service_names: Iterable[str], max_streams: int, idle_seconds: float,
                 commented_files: CommentedFiles) -> None:
        super().__init__(tuple(service_names), pool=SymbolLookupPool(descriptor_pool.Default()))
        self._slots = CallSlots(max_streams, too_many_reflection_streams)
        self._idle_seconds = idle_seconds
        self._commented_files = commented_files

    def ServerReflectionInfo(
        self, request_iterator: Iterator[reflection_pb2.ServerReflectionRequest], context: grpc.ServicerContext
    ) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        self._slots.hold_until_the_call_ends(context)  # here, not in the generator: refused before any request
        return self._answers(request_iterator, context)

    def _answers(
        self, requests: Iterator[reflection_pb2.ServerReflectionRequest], context: grpc.ServicerContext
    ) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        for response in super().ServerReflectionInfo(RequestsUntilIdle(requests, self._idle_seconds), context):
            yield self._commented_files.into(response)


def _register_v1_file() -> None:
    """Adds the v1 file to the default pool once per process (servers in one process share it)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return  # added by an earlier server, or by a library that ships v1
    except KeyError:
        pass
    pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The v1alpha file, renamed to v1: its package, the types it names, and the language options."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = _V1_FILE_NAME
    file.package = _V1_PACKAGE
    file.ClearField("options")  # v1alpha's are deprecated=true and its own java/go packages
    old_prefix, new_prefix = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name.removeprefix(old_prefix)
    for service in file.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type.removeprefix(old_prefix)
            method.output_type = new_prefix + method.output_type.removeprefix(old_prefix)
    return file
