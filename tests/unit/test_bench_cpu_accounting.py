"""The benchmark's CPU figure for a server counts the processes it starts (its decoders), ended or not.

A server decodes in processes forked by a forkserver it started, so the server's own CPU
time alone would leave decoding out of the benchmark's "CPU per frame" and its bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_server import _process_tree_cpu_seconds

BUSY_SECONDS = 0.4


# A process whose child starts two grandchildren that burn BUSY_SECONDS of CPU each: the
# child reaps the first (its CPU becomes the child's reaped-children time) while the second
# stays alive. The child says so once both have burnt their share.
_PARENT = textwrap.dedent(
    f"""
    import os, sys, time

    def burn():
        started = time.process_time()
        while time.process_time() - started < {BUSY_SECONDS}:
            pass

    child = os.fork()
    if child == 0:
        first = os.fork()
        if first == 0:
            burn()
            os._exit(0)
        os.waitpid(first, 0)  # reaped: its CPU is now the child's reaped-children time
        ready, tell = os.pipe()
        second = os.fork()
        if second == 0:
            burn()
            os.write(tell, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(ready, 1)
        print("burnt", flush=True)
        time.sleep(60)
        os._exit(0)
    os.waitpid(child, 0)
    """
)


@pytest.fixture
def process_tree() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sleeping descendants too
        process.wait(timeout=10)


def test_a_process_tree_counts_ended_and_live_descendants(process_tree: subprocess.Popen[str]) -> None:
    assert process_tree.stdout is not None
    assert process_tree.stdout.readline().strip() == "burnt"
    seconds = _process_tree_cpu_seconds(process_tree.pid)
    # Two grandchildren burnt BUSY_SECONDS each: one reaped by its parent, one still running.
    # The processes themselves cost a few hundredths (a Python start each).
    assert 2 * BUSY_SECONDS * 0.9 <= seconds < 2 * BUSY_SECONDS + 1.0

def test_a_process_that_is_gone_counts_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    assert _process_tree_cpu_seconds(gone.pid) == 0.0
