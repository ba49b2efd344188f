"""Server reflection as clients of either protocol version ask for it, against a real server.

A client of the stable protocol calls `grpc.reflection.v1`; older tools call `v1alpha`. The
two have the same messages under another package, so these tests speak both through the
v1alpha message classes, changing only the method path, as such a client does on the wire.
`buf curl`, a real client that can be held to one version, then calls the service through each.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from importlib import resources

import grpc
import pytest
from ecosystem_tools import BUF, ensure_node_deps
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from harness import ServerFactory, ServerHarness

from fakes.waiting import wait_until
from videodag_service.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME
from videodag_service.reflection_comments import DESCRIPTOR_SET_NAME, DESCRIPTOR_SET_PACKAGE
from videodag_service.reflection_idle import WAIT_THREAD_NAME

SERVICE = "videodag.v1.VideoPipelineService"
SERVICE_FILE = "videodag/v1/video_pipeline_service.proto"
VERSIONS = pytest.mark.parametrize("reflection_service", [V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME])


def ask(target: str, reflection_service: str, *requests: reflection_pb2.ServerReflectionRequest,
        metadata: tuple[tuple[str, str], ...] = ()) -> list[reflection_pb2.ServerReflectionResponse]:
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/{reflection_service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return list(info(iter(requests), metadata=metadata, timeout=10))


def contract_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    data = resources.files(DESCRIPTOR_SET_PACKAGE).joinpath(DESCRIPTOR_SET_NAME).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def files_of(response: reflection_pb2.ServerReflectionResponse) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = [descriptor_pb2.FileDescriptorProto.FromString(data)
             for data in response.file_descriptor_response.file_descriptor_proto]
    return {file.name: file for file in files}


@VERSIONS
def test_both_versions_list_the_services_and_both_reflection_names(server: ServerHarness,
                                                                   reflection_service: str) -> None:
    (response,) = ask(server.target, reflection_service, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in response.list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME}


@VERSIONS
def test_both_versions_describe_the_service_with_its_dependencies(server: ServerHarness,
                                                                  reflection_service: str) -> None:
    (response,) = ask(server.target, reflection_service,
                      reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    files = files_of(response)
    (service_file,) = [file for file in files.values() if any(s.name == "VideoPipelineService" for s in file.service)]
    assert {method.name for method in service_file.service[0].method} >= {"UploadAndRun", "SubmitJob", "WatchJob"}
    assert set(service_file.dependency) <= set(files)  # everything a client needs to build the messages


@VERSIONS
@pytest.mark.parametrize("request_for", [
    reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    reflection_pb2.ServerReflectionRequest(file_by_filename="videodag/v1/video_pipeline_service.proto"),
], ids=["symbol", "file name"])
def test_both_versions_serve_the_contracts_files_with_their_comments(
    server: ServerHarness, reflection_service: str, request_for: reflection_pb2.ServerReflectionRequest
) -> None:
    """The descriptors the server runs on carry no comments; reflection adds them to the
    contract's own files, as protoc read them, and serves every other file as before."""
    (response,) = ask(server.target, reflection_service, request_for)
    files = files_of(response)
    commented = {file.name: file for file in contract_descriptor_set().file}
    assert set(commented) <= set(files)  # the service file and the contract files it imports
    for name, file in files.items():
        if name in commented:
            assert file.source_code_info == commented[name].source_code_info
        else:
            assert not file.HasField("source_code_info"), name
    (service_location,) = [location for location in files[SERVICE_FILE].source_code_info.location
                           if list(location.path) == [6, 0]]  # FileDescriptorProto.service[0]
    assert service_location.leading_comments.startswith(" Runs named pipelines")


@VERSIONS
@pytest.mark.parametrize(("symbol", "file_name"), [
    (f"{SERVICE}.UploadAndRun", SERVICE_FILE),
    ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto"),
    ("videodag.v1.JOB_STATE_QUEUED", "videodag/v1/job.proto"),  # protobuf's name for the value
    ("videodag.v1.JobState.JOB_STATE_QUEUED", "videodag/v1/job.proto"),  # grpcurl's and grpcui's
    ("videodag.v1.RunConfig.pipeline_id", "videodag/v1/run.proto"),
])
def test_both_versions_find_the_file_of_a_method_or_an_enum_value(
    server: ServerHarness, reflection_service: str, symbol: str, file_name: str
) -> None:
    """protobuf's pool does not find methods, nor enum values named inside their enum: grpcurl
    could not describe either ("Symbol not found")."""
    (response,) = ask(server.target, reflection_service,
                      reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert next(iter(files_of(response))) == file_name  # the file declaring it comes first, then what it imports


def test_the_v1_service_describes_itself_under_its_own_package(server: ServerHarness) -> None:
    (response,) = ask(server.target, V1_SERVICE_NAME,
                      reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1_SERVICE_NAME))
    (file,) = files_of(response).values()
    assert file.package == "grpc.reflection.v1"
    (method,) = file.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest", ".grpc.reflection.v1.ServerReflectionResponse")
    assert (method.client_streaming, method.server_streaming) == (True, True)


def test_an_unknown_symbol_is_an_error_response_on_the_open_stream(server: ServerHarness) -> None:
    responses = ask(server.target, V1_SERVICE_NAME,
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"{SERVICE}.NoSuchMethod"),
                    reflection_pb2.ServerReflectionRequest(list_services=""))
    not_found = grpc.StatusCode.NOT_FOUND.value[0]
    assert [response.error_response.error_code for response in responses[:2]] == [not_found, not_found]
    assert len(responses[2].list_services_response.service) == 4


@VERSIONS
def test_both_versions_need_the_token_when_the_server_asks_for_one(make_server: ServerFactory,
                                                                   reflection_service: str) -> None:
    server = make_server(tokens="reflection-secret")
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as refused:
        ask(server.target, reflection_service, request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (response,) = ask(server.target, reflection_service, request,
                      metadata=(("authorization", "Bearer reflection-secret"),))
    assert len(response.list_services_response.service) == 4


def _idle_stream(channel: grpc.Channel, reflection_service: str, done: threading.Event) -> grpc.Future:
    """A reflection stream that asks once, then stays open without asking more, as grpcui's does."""
    info = channel.stream_stream(
        f"/{reflection_service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        done.wait(30)

    return info(requests(), timeout=30)


def test_idle_reflection_streams_are_capped_under_both_names_and_leave_health_checks_served(
    make_server: ServerFactory,
) -> None:
    """181 idle reflection streams, which anyone may open on a server without tokens, took every
    call slot: health checks were refused, and a load balancer would have taken the server out."""
    server = make_server(max_reflection_streams=2, reflection_idle_timeout_seconds=0)  # the cap alone
    done = threading.Event()
    with grpc.insecure_channel(server.target) as channel:
        streams = [_idle_stream(channel, name, done) for name in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)]
        try:
            for stream in streams:
                assert len(next(stream).list_services_response.service) == 4
            for name in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME):
                with pytest.raises(grpc.RpcError) as refused:
                    ask(server.target, name, reflection_pb2.ServerReflectionRequest(list_services=""))
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                status = rpc_status.from_call(refused.value)
                assert status is not None
                info = error_details_pb2.ErrorInfo()
                assert any(detail.Unpack(info) for detail in status.details)
                assert (info.reason, dict(info.metadata)) == ("TOO_MANY_REFLECTION_STREAMS",
                                                              {"max_reflection_streams": "2"})
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            done.set()
            for stream in streams:
                stream.cancel()
    # The slots are free again once the streams end.
    assert wait_until(lambda: _answers(server.target))


@VERSIONS
def test_a_stream_without_a_request_for_the_idle_limit_ends_ok_and_frees_its_slot(
    make_server: ServerFactory, reflection_service: str
) -> None:
    """grpcurl keeps its stream for the whole command: 16 watching grpcurls held every slot, and
    every other grpcurl was refused until they ended. The client opens another when it asks again."""
    server = make_server(max_reflection_streams=1, reflection_idle_timeout_seconds=1)
    done = threading.Event()
    with grpc.insecure_channel(server.target) as channel:
        stream = _idle_stream(channel, reflection_service, done)
        try:
            assert len(next(stream).list_services_response.service) == 4
            asked = time.monotonic()
            with pytest.raises(StopIteration):  # the server ends it, with OK
                next(stream)
            assert time.monotonic() - asked >= 0.9
            assert stream.code() == grpc.StatusCode.OK
        finally:
            done.set()
    assert _answers(server.target)  # its slot, the only one, is free again
    assert wait_until(lambda: WAIT_THREAD_NAME not in {thread.name for thread in threading.enumerate()}), \
        "a thread still waits for the ended stream's next request"


def test_a_stream_that_keeps_asking_is_not_ended(make_server: ServerFactory) -> None:
    """The limit is on the time without a request, not on the stream's whole life."""
    server = make_server(reflection_idle_timeout_seconds=1.5)

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        for _ in range(8):  # 2 s in all, more than the limit
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            time.sleep(0.25)

    with grpc.insecure_channel(server.target) as channel:
        info = channel.stream_stream(
            f"/{V1_SERVICE_NAME}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        responses = list(info(requests(), timeout=10))
    assert len(responses) == 8


def _answers(target: str) -> bool:
    try:
        return len(ask(target, V1_SERVICE_NAME, reflection_pb2.ServerReflectionRequest(list_services=""))) == 1
    except grpc.RpcError:
        return False


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_held_to_one_reflection_version_calls_the_service(server: ServerHarness, protocol: str) -> None:
    ensure_node_deps()
    completed = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol,
         "-d", "{}", f"http://{server.target}/{SERVICE}/ListPipelines"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    ids = [pipeline["id"] for pipeline in json.loads(completed.stdout)["pipelines"]]
    assert ids == [pipeline.id for pipeline in server.client.list_pipelines()]
