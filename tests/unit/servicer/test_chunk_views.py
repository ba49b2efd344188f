"""Upload chunks read as views of the received bytes: the same chunk protobuf would read, or protobuf itself."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError

from videodag.v1 import run_pb2, video_pipeline_service_pb2
from videodag_service.chunk_views import ChunkViewInterceptor, chunk_view, chunks_as_views
from videodag_service.client_streams import chunks, first_config
from videodag_service.errors import BadRequestStream

Request = video_pipeline_service_pb2.UploadAndRunRequest
SERVICE = "/videodag.v1.VideoPipelineService"
CHUNK_TAG = b"\x12"
UNKNOWN_FIELD_99 = b"\x98\x06\x01"  # field 99, varint 1
CUT_SHORT = Request(chunk=b"0123456789").SerializeToString()[:5]  # declares 10 bytes, holds 3


# Every length whose varint changes size, on both sides of the boundary.
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152 + 5])
def test_a_chunk_only_message_is_its_chunk_without_a_copy(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = Request(chunk=chunk).SerializeToString()
    view = chunk_view(message)
    assert view is not None
    assert view.readonly and view.obj is message
    assert view.tobytes() == Request.FromString(message).chunk == chunk


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"", id="empty message"),
        pytest.param(Request(config=run_pb2.RunConfig(pipeline_id="frame_stats_v1")).SerializeToString(), id="config"),
        pytest.param(Request(chunk=b"abc").SerializeToString() + UNKNOWN_FIELD_99, id="chunk then unknown field"),
        pytest.param(UNKNOWN_FIELD_99 + Request(chunk=b"abc").SerializeToString(), id="unknown field then chunk"),
        pytest.param(Request(chunk=b"ab").SerializeToString() * 2, id="chunk field twice"),
        pytest.param(CHUNK_TAG + b"\x80", id="length cut short"),
        pytest.param(CUT_SHORT, id="chunk cut short"),
        pytest.param(CHUNK_TAG + b"\x80" * 10 + b"\x00", id="length of eleven bytes"),
    ],
)
def test_any_other_message_is_left_to_protobuf(message: bytes) -> None:
    assert chunk_view(message) is None


def test_the_deserializer_reads_what_protobuf_reads() -> None:
    deserialize = chunks_as_views(Request.FromString)
    config = deserialize(Request(config=run_pb2.RunConfig(pipeline_id="p")).SerializeToString())
    assert isinstance(config, Request) and config.config.pipeline_id == "p"
    assert bytes(deserialize(Request(chunk=b"abc").SerializeToString())) == b"abc"
    # The last of two chunk fields wins, as in protobuf, and unknown fields are skipped.
    twice = Request(chunk=b"first").SerializeToString() + Request(chunk=b"second").SerializeToString()
    assert deserialize(twice).chunk == b"second"
    assert deserialize(Request(chunk=b"abc").SerializeToString() + UNKNOWN_FIELD_99).chunk == b"abc"
    with pytest.raises(DecodeError):
        deserialize(CUT_SHORT)


def test_client_streams_read_views_and_messages_alike() -> None:
    requests = iter([Request(config=run_pb2.RunConfig(pipeline_id="p")), memoryview(b"ab"), Request(chunk=b"cd")])
    assert first_config(requests).pipeline_id == "p"
    assert b"".join(bytes(chunk) for chunk in chunks(requests)) == b"abcd"
    with pytest.raises(BadRequestStream, match="a chunk arrived first"):
        first_config(iter([memoryview(b"ab")]))


def _generated_handler(method: str) -> grpc.RpcMethodHandler:
    name = method.rsplit("/", 1)[1]
    parse = getattr(video_pipeline_service_pb2, f"{name}Request").FromString
    if name == "UploadAndRun":
        return grpc.stream_stream_rpc_method_handler(lambda requests, context: iter(()), parse)
    if name == "SubmitJob":
        return grpc.stream_unary_rpc_method_handler(lambda requests, context: None, parse)
    return grpc.unary_unary_rpc_method_handler(lambda request, context: None, parse)


class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


@pytest.mark.parametrize(("method", "streams"), [("UploadAndRun", "stream_stream"), ("SubmitJob", "stream_unary")])
def test_the_interceptor_gives_the_upload_methods_views(method: str, streams: str) -> None:
    original = _generated_handler(f"{SERVICE}/{method}")
    handler = ChunkViewInterceptor().intercept_service(lambda details: original, _CallDetails(f"{SERVICE}/{method}"))
    assert getattr(handler, streams) is getattr(original, streams)
    assert handler.response_serializer is original.response_serializer
    view = handler.request_deserializer(b"\x12\x03abc")
    assert isinstance(view, memoryview) and bytes(view) == b"abc"
    config = handler.request_deserializer(b"\x0a\x00")
    assert config.HasField("config")


def test_the_interceptor_leaves_other_methods_and_unknown_ones_alone() -> None:
    original = _generated_handler(f"{SERVICE}/GetJob")
    interceptor = ChunkViewInterceptor()
    assert interceptor.intercept_service(lambda details: original, _CallDetails(f"{SERVICE}/GetJob")) is original
    # Reflection streams requests too, and its field 2 (`file_by_filename`) is also tag 0x12.
    reflection = grpc.stream_stream_rpc_method_handler(lambda requests, context: iter(()), lambda data: data)
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert interceptor.intercept_service(lambda details: reflection, _CallDetails(method)) is reflection
    assert interceptor.intercept_service(lambda details: None, _CallDetails(f"{SERVICE}/UploadAndRun")) is None
