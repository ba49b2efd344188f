"""The client shares with the service only `videodag_service.media`, which stands alone.

`videodag render` must orient frames exactly as the service did when it found the boxes, so it
uses the service's own container reading rather than a copy that could drift. That package
imports nothing else of the service, so the client loads none of the decoding engine, the DAG
or the plugins. Checked in a fresh interpreter each, since this one has loaded everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The package's own `__init__` runs only a check of which process it is in (`grpc_verbosity`).
PACKAGE_MODULES = {"videodag_service", "videodag_service.grpc_verbosity"}
SHARED_PACKAGE = "videodag_service.media"
_LOADED_SERVICE_MODULES = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not module.name.endswith(".__main__"):  # running the command is not importing it
        importlib.import_module(module.name)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("videodag_service"))))
"""


@pytest.mark.parametrize("package", ["videodag_client", "videodag_service.media"])
def test_a_package_loads_of_the_service_only_its_media_package(package: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _LOADED_SERVICE_MODULES, package], capture_output=True, text=True, check=True,
        timeout=120,
    )
    service_modules = json.loads(loaded.stdout)
    assert "videodag_service.media.display_matrix" in service_modules
    others = [name for name in service_modules
              if name not in PACKAGE_MODULES and name != SHARED_PACKAGE and not name.startswith(f"{SHARED_PACKAGE}.")]
    assert others == []
