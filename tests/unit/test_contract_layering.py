"""The generated code (`videodag.v1`) stays at the gRPC edge, so the contract changes in few places.

On the service side only the modules that speak the contract import it: the two servicers, their
two conversion modules, and the two interceptors that read a request's raw bytes before it is
parsed. The engine packages load no gRPC at all (`test_engine_layering`). On the client side the
library converts every message into its own types, and the CLI works with those alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_SPEAKERS = {
    "videodag_service.servicer",
    "videodag_service.job_servicer",
    "videodag_service.convert",
    "videodag_service.convert_jobs",
    "videodag_service.chunk_views",
    "videodag_service.unparsed_requests",
}


def _imports_generated_code(source: Path) -> bool:
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name == "videodag.v1" or name.startswith("videodag.v1.") for name in names):
            return True
    return False


def _modules_importing_generated_code(package_root: Path) -> set[str]:
    found = set()
    for source in package_root.rglob("*.py"):
        if _imports_generated_code(source):
            parts = source.relative_to(package_root.parent).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_on_the_service_side_only_the_modules_that_speak_the_contract_import_it() -> None:
    importing = _modules_importing_generated_code(ROOT / "service" / "videodag_service")
    assert "videodag_service.servicer" in importing  # the scan finds what is there
    assert importing <= CONTRACT_SPEAKERS, f"generated code outside the gRPC edge: {importing - CONTRACT_SPEAKERS}"


def test_the_cli_works_with_the_client_librarys_own_types() -> None:
    importing = _modules_importing_generated_code(ROOT / "client" / "videodag_client")
    assert "videodag_client._client" in importing
    assert [name for name in importing if name.startswith("videodag_client.cli")] == []
