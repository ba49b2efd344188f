"""Finding the file that declares a symbol, for reflection: `SymbolLookupPool`."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2 as _health_pb2  # noqa: F401 (its file in the default pool)

from videodag.v1 import video_pipeline_service_pb2 as _service_pb2  # noqa: F401 (the contract in the default pool)
from videodag_service.reflection_symbols import SymbolLookupPool

SERVICE_FILE = "videodag/v1/video_pipeline_service.proto"
HEALTH_FILE = "grpc_health/v1/health.proto"


@pytest.mark.parametrize(("symbol", "file_name"), [
    # What protobuf's pool finds by itself.
    ("videodag.v1.VideoPipelineService", SERVICE_FILE),
    ("videodag.v1.RunConfig", "videodag/v1/run.proto"),
    ("videodag.v1.RunConfig.pipeline_id", "videodag/v1/run.proto"),
    ("videodag.v1.UploadAndRunRequest.payload", SERVICE_FILE),  # a oneof
    ("videodag.v1.JobState", "videodag/v1/job.proto"),
    ("videodag.v1.JOB_STATE_QUEUED", "videodag/v1/job.proto"),  # protobuf's name for an enum value
    ("grpc.health.v1.HealthCheckResponse.ServingStatus", HEALTH_FILE),  # a nested enum
    # What it misses: methods, and enum values named inside their enum as grpcurl names them.
    ("videodag.v1.VideoPipelineService.UploadAndRun", SERVICE_FILE),
    ("grpc.health.v1.Health.Check", HEALTH_FILE),
    ("videodag.v1.JobState.JOB_STATE_QUEUED", "videodag/v1/job.proto"),
    ("grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING", HEALTH_FILE),
])
def test_the_file_of_every_kind_of_symbol_is_found(symbol: str, file_name: str) -> None:
    assert SymbolLookupPool(descriptor_pool.Default()).FindFileContainingSymbol(symbol).name == file_name


@pytest.mark.parametrize("symbol", [
    "videodag.v1.NoSuchMessage",
    "videodag.v1.VideoPipelineService.NoSuchMethod",
    "videodag.v1.JobState.NO_SUCH_VALUE",
    "videodag.v1.RunConfig.JOB_STATE_QUEUED",  # a value, but not of an enum of that name
    "videodag.v1.JobState.JOB_STATE_QUEUED\x00junk",  # protobuf's lookup by value name stops at the NUL
    "",
])
def test_an_unknown_symbol_is_a_key_error_as_in_the_pool(symbol: str) -> None:
    with pytest.raises(KeyError):
        SymbolLookupPool(descriptor_pool.Default()).FindFileContainingSymbol(symbol)


def test_every_other_lookup_is_the_pools_own() -> None:
    pool = SymbolLookupPool(descriptor_pool.Default())
    assert pool.FindFileByName(SERVICE_FILE) is descriptor_pool.Default().FindFileByName(SERVICE_FILE)
    assert pool.FindMessageTypeByName("videodag.v1.RunConfig").name == "RunConfig"
