"""The server raises its soft limit on open files to the hard one at start."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from jobs_harness import SERVER_SCRIPT, ServerProcess

SOFT_LIMIT = 256


def _open_files_limits(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_a_low_soft_limit_on_open_files_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """At a shell's or a container's soft limit, calls failed with EMFILE (INTERNAL, then) and new
    connections hung, where the hard limit allowed far more."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert resource.RLIM_INFINITY != hard > SOFT_LIMIT, "the test needs room above its soft limit"
    lowered_then_started = [
        sys.executable, "-c",
        f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT_LIMIT}, {hard})); "
        "os.execv(sys.argv[1], sys.argv[1:])",
        *SERVER_SCRIPT,
    ]
    arguments = ["--host", "127.0.0.1", "--port", "0", "--temp-dir", str(tmp_path / "uploads"),
                 "--data-dir", str(tmp_path / "data")]
    server = ServerProcess(arguments, {}, tmp_path / "server.log", command=lowered_then_started)
    try:
        assert _open_files_limits(server.process.pid) == (hard, hard)
    finally:
        server.kill()
