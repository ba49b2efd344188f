"""The contract's files served by reflection with their .proto comments: `CommentedFiles` and
the descriptor set `scripts/generate_protos.py` writes beside the generated code."""

from __future__ import annotations

import fnmatch
import logging
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf import timestamp_pb2 as _timestamp_pb2  # noqa: F401 (its file in the default pool)
from grpc_reflection.v1alpha import reflection_pb2

from videodag.v1 import video_pipeline_service_pb2 as _service_pb2  # noqa: F401 (the contract in the default pool)
from videodag_service import reflection_comments
from videodag_service.reflection_comments import DESCRIPTOR_SET_NAME, DESCRIPTOR_SET_PACKAGE, CommentedFiles

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTRACT_FILES = {f"videodag/v1/{path.name}" for path in (REPO_ROOT / "protos" / "videodag" / "v1").glob("*.proto")}
SERVICE_FILE = "videodag/v1/video_pipeline_service.proto"
SERVICE_PATH = [6, 0]  # FileDescriptorProto.service[0]: where source info keeps the service's comment


def contract_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    data = resources.files(DESCRIPTOR_SET_PACKAGE).joinpath(DESCRIPTOR_SET_NAME).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def leading_comment(file: descriptor_pb2.FileDescriptorProto, path: list[int]) -> str:
    (location,) = [location for location in file.source_code_info.location if list(location.path) == path]
    return location.leading_comments


def pool_copy(name: str) -> bytes:
    file = descriptor_pb2.FileDescriptorProto()
    descriptor_pool.Default().FindFileByName(name).CopyToProto(file)
    return file.SerializeToString()


def test_the_generated_package_holds_the_contracts_own_files_with_their_comments() -> None:
    files = {file.name: file for file in contract_descriptor_set().file}
    assert set(files) == CONTRACT_FILES  # no imports: reflection serves those from their own modules
    assert leading_comment(files[SERVICE_FILE], SERVICE_PATH).startswith(" Runs named pipelines")
    for file in files.values():
        assert any(location.leading_comments for location in file.source_code_info.location), file.name


def test_the_descriptor_set_ships_with_the_package() -> None:
    """`pip install .` and the image install only what package-data names beside the code."""
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch(DESCRIPTOR_SET_NAME, pattern) for pattern in package_data["*"])


def test_every_commented_file_describes_what_the_server_runs() -> None:
    assert CommentedFiles.of_the_contract(descriptor_pool.Default()).names == CONTRACT_FILES


def test_a_response_carries_the_commented_copies_and_every_other_file_as_it_was() -> None:
    commented = CommentedFiles.of_the_contract(descriptor_pool.Default())
    timestamp = pool_copy("google/protobuf/timestamp.proto")
    response = reflection_pb2.ServerReflectionResponse(
        file_descriptor_response=reflection_pb2.FileDescriptorResponse(
            file_descriptor_proto=[pool_copy(SERVICE_FILE), timestamp]
        )
    )

    served = commented.into(response).file_descriptor_response.file_descriptor_proto

    service_file = descriptor_pb2.FileDescriptorProto.FromString(served[0])
    assert leading_comment(service_file, SERVICE_PATH).startswith(" Runs named pipelines")
    service_file.ClearField("source_code_info")
    # Nothing else added: protoc's JSON names would have grpcurl print `uploadReceived` for `upload_received`.
    assert service_file.SerializeToString() == pool_copy(SERVICE_FILE)
    assert served[1] == timestamp


def test_answers_without_files_pass_unchanged() -> None:
    commented = CommentedFiles.of_the_contract(descriptor_pool.Default())
    listing = reflection_pb2.ServerReflectionResponse(
        list_services_response=reflection_pb2.ListServiceResponse(
            service=[reflection_pb2.ServiceResponse(name="videodag.v1.VideoPipelineService")]
        )
    )
    assert commented.into(listing) == listing


def test_a_file_out_of_step_with_the_generated_code_is_served_without_comments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its fields could differ from those the server reads: a client must never get those."""
    stale = contract_descriptor_set()
    (run_file,) = [file for file in stale.file if file.name == "videodag/v1/run.proto"]
    run_file.message_type[0].field[0].number = 99

    with caplog.at_level(logging.WARNING, logger=reflection_comments.__name__):
        commented = CommentedFiles.matching(stale, descriptor_pool.Default())

    assert commented.names == CONTRACT_FILES - {"videodag/v1/run.proto"}
    assert "videodag/v1/run.proto" in caplog.text and "without its comments" in caplog.text


def test_without_a_descriptor_set_the_server_serves_the_bare_files(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reflection_comments, "DESCRIPTOR_SET_NAME", "no_such_set.binpb")
    with caplog.at_level(logging.WARNING, logger=reflection_comments.__name__):
        commented = CommentedFiles.of_the_contract(descriptor_pool.Default())
    assert commented.names == frozenset()
    assert "generate_protos.py" in caplog.text


def test_a_descriptor_set_cut_short_is_served_without_comments_not_a_failed_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A truncated copy (an unpacked wheel, a partial copy) stopped the server with a DecodeError."""
    whole = resources.files(reflection_comments.DESCRIPTOR_SET_PACKAGE).joinpath(
        reflection_comments.DESCRIPTOR_SET_NAME).read_bytes()
    package = tmp_path / "cut"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "contract.binpb").write_bytes(whole[: len(whole) // 2])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(reflection_comments, "DESCRIPTOR_SET_PACKAGE", "cut")
    monkeypatch.setattr(reflection_comments, "DESCRIPTOR_SET_NAME", "contract.binpb")
    with caplog.at_level(logging.WARNING, logger=reflection_comments.__name__):
        commented = CommentedFiles.of_the_contract(descriptor_pool.Default())
    assert commented.names == frozenset()
    assert "cannot be read (DecodeError" in caplog.text
