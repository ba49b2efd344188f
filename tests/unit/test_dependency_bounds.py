"""The lower bounds pyproject.toml declares admit no release the project fails with.

The generated protobuf and gRPC code refuses, at import, runtimes older than those it was
generated for: a bound below them let pip keep an older protobuf or grpcio already installed
(`pip check` content), after which both commands failed at their first import.
The client's bounds are no higher than that either: each release above them that it required
would shut out services held to an older protobuf or grpcio by another library.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "protos" / "gen" / "python" / "videodag" / "v1"


def _lowest_allowed(name: str) -> Version:
    """The lowest release of `name` the client's dependencies or the server extra's admit."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    (requirement,) = [Requirement(line) for line in dependencies if Requirement(line).name == name]
    (lowest,) = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return lowest


def _generated_for(pattern: str, files: str) -> set[Version]:
    return {Version(match) for path in GENERATED.glob(files) for match in re.findall(pattern, path.read_text())}


def test_protobuf_is_at_least_the_runtime_the_generated_messages_ask_for() -> None:
    made_for = _generated_for(r"# Protobuf Python Version: (\S+)", "*_pb2.py")
    assert made_for, "the generated messages name the protobuf version they were made for"
    assert _lowest_allowed("protobuf") >= max(made_for)


def test_grpc_packages_are_at_least_the_runtime_the_generated_stubs_ask_for() -> None:
    made_for = _generated_for(r"GRPC_GENERATED_VERSION = '([^']+)'", "*_pb2_grpc.py")
    assert made_for, "the generated stubs name the grpcio version they were made for"
    for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status"):
        assert _lowest_allowed(name) >= max(made_for), name


def test_the_clients_bounds_are_exactly_what_the_generated_code_asks_for() -> None:
    messages = max(_generated_for(r"# Protobuf Python Version: (\S+)", "*_pb2.py"))
    stubs = max(_generated_for(r"GRPC_GENERATED_VERSION = '([^']+)'", "*_pb2_grpc.py"))
    assert _lowest_allowed("protobuf") == messages
    assert _lowest_allowed("grpcio") == stubs
    assert _lowest_allowed("grpcio-status") == stubs
