"""The engine knows no gRPC: the DAG, plugin, video and job packages load neither gRPC nor the
generated code, so a script, a test or an RQ worker can use them alone.

Checked in a fresh interpreter each, since this one has loaded everything already; a module
that imports gRPC only through another package (a logging helper whose package loads the
call interceptors, say) fails here as a direct import would.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ENGINE_PACKAGES = (
    "videodag_service.dag",
    "videodag_service.plugins",
    "videodag_service.video",
    "videodag_service.jobs",
    "videodag_service.media",
)
# Every module of the packages, not only their __init__: a submodule may import more.
_LOADED_EDGE_MODULES = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
edge = sorted(name for name in sys.modules
              if name == "grpc" or name.startswith(("grpc.", "videodag.v1", "videodag_service.servicer")))
print(json.dumps(edge))
"""


@pytest.mark.parametrize("package", ENGINE_PACKAGES)
def test_an_engine_package_and_all_its_modules_load_no_grpc(package: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _LOADED_EDGE_MODULES, package], capture_output=True, text=True, check=True, timeout=120,
    )
    assert json.loads(loaded.stdout) == []
