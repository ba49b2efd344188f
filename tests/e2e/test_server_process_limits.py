"""The server's own process limits, set at start: open files up, core dumps off."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

from jobs_harness import SERVER_SCRIPT, ServerProcess

SOFT_LIMIT = 256


def _limits(pid: int, name: str) -> tuple[str, str]:
    """The soft and hard limit `name` of process `pid` ("unlimited" or a number), as the kernel says."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith(name))
    soft, hard = re.split(r"\s{2,}", line[len(name):].strip())[:2]
    return soft, hard


def _started_with_limit(tmp_path: Path, limit: str, soft: int, hard: int) -> ServerProcess:
    """A server started by a process that set `limit` (resource.RLIMIT_*) to `soft`, `hard` first."""
    limited_then_started = [
        sys.executable, "-c",
        f"import os, resource, sys; resource.setrlimit(resource.{limit}, ({soft}, {hard})); "
        "os.execv(sys.argv[1], sys.argv[1:])",
        *SERVER_SCRIPT,
    ]
    arguments = ["--host", "127.0.0.1", "--port", "0", "--temp-dir", str(tmp_path / "uploads"),
                 "--data-dir", str(tmp_path / "data")]
    return ServerProcess(arguments, {}, tmp_path / "server.log", command=limited_then_started)


def test_a_low_soft_limit_on_open_files_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """At a shell's or a container's soft limit, calls failed with EMFILE (INTERNAL, then) and new
    connections hung, where the hard limit allowed far more."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert resource.RLIM_INFINITY != hard > SOFT_LIMIT, "the test needs room above its soft limit"
    server = _started_with_limit(tmp_path, "RLIMIT_NOFILE", SOFT_LIMIT, hard)
    try:
        assert _limits(server.process.pid, "Max open files") == (str(hard), str(hard))
    finally:
        server.kill()


def test_the_server_writes_no_core_dump_but_an_operator_may_turn_them_on_again(tmp_path: Path) -> None:
    """A crash's core dump is a copy of the server's memory (callers' frames, results, uploads)
    kept wherever the machine keeps crash reports, past every job's deletion. The soft limit
    only: the hard one is left for an operator chasing a crash (`prlimit --core`)."""
    server = _started_with_limit(tmp_path, "RLIMIT_CORE", -1, -1)  # RLIM_INFINITY
    try:
        assert _limits(server.process.pid, "Max core file size") == ("0", "unlimited")
    finally:
        server.kill()
