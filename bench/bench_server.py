"""Servers the benchmark talks to, each in its own process, and their memory.

A subprocess rather than `start_server` in the benchmark's process: in-process, the server
would share the GIL with the client and with the measuring loop, and its memory could not
be told apart from theirs. Over loopback in its own process it runs as it does in
production, and `/proc/PID/status` gives its resident memory (VmRSS) and peak (VmHWM).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

BENCH_DIR = Path(__file__).resolve().parent
_LISTENING = re.compile(r"listening on .*:(\d+)\s*$")


def _process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of the children it has reaped, and of its live descendants.

    A child's time moves into its parent's reaped-children time when the parent waits for
    it, so the sum stays whole as processes end. A process that ends while being read is
    skipped.
    """
    stats = _process_stats()
    children: dict[int, list[int]] = {}
    for child, (parent, _seconds) in stats.items():
        children.setdefault(parent, []).append(child)
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += stats.get(current, (0, 0.0))[1]
        pending.extend(children.get(current, []))
    return total


def _process_stats() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds (its own and its reaped children's), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # After the command: state, ppid, ... and fields 14-17 of proc(5), utime to cstime.
        stats[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / ticks)
    return stats


class ServerProcess:
    """A server started as `python ARGS...` that prints 'listening on HOST:PORT' once ready."""

    def __init__(self, args: Sequence[str], *, startup_seconds: float = 60.0) -> None:
        # stderr goes to a file: a pipe nobody reads would stall a server that logs a lot.
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        self.port = self._wait_for_port(startup_seconds)
        self.target = f"127.0.0.1:{self.port}"

    @classmethod
    def videodag(cls, temp_dir: Path, *extra: str) -> ServerProcess:
        """The real server (`python -m videodag_service.server --port 0`) with its built-in pipelines."""
        return cls(["-m", "videodag_service.server", "--port", "0", "--log-level", "WARNING",
                    "--temp-dir", str(temp_dir), "--data-dir", str(temp_dir / "jobs"), *extra])

    @classmethod
    def naive(cls) -> ServerProcess:
        """The naive synchronous server of `bench_naive_server.py`."""
        return cls([str(BENCH_DIR / "bench_naive_server.py")])

    @classmethod
    def bare_stream(cls, temp_dir: Path, max_message_bytes: int, *, sha256: bool = False) -> ServerProcess:
        """The bare gRPC byte-stream server of `bench_bare_stream.py`, hashing what it receives with `sha256`."""
        return cls([str(BENCH_DIR / "bench_bare_stream.py"), "--temp-dir", str(temp_dir),
                    "--max-message-bytes", str(max_message_bytes), *(["--sha256"] if sha256 else [])])

    def _wait_for_port(self, startup_seconds: float) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + startup_seconds
        # readline blocks; the server prints the line once it is serving, or dies.
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = _LISTENING.search(line)
            if match:
                return int(match.group(1))
        self._terminate()
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"server did not start: {tail}")

    def log_tail(self, characters: int = 2000) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-characters:].strip()

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes: resident memory now, and its peak since the process started."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far: all its threads, and every
        process it started, ended or running (the forkserver and its decoder processes).

        A decoder process decodes a run's frames outside the server's own process, so the
        server's own time alone would leave decoding out.
        """
        return _process_tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self._terminate()
        self._log.close()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class MemorySampler:
    """Samples a server's VmRSS every few milliseconds in a thread, keeping the peak."""

    def __init__(self, server: ServerProcess, interval_seconds: float = 0.005) -> None:
        self._server = server
        self._interval = interval_seconds
        self._stop = threading.Event()
        self.peak_rss = server.memory()[0]
        self._thread = threading.Thread(target=self._sample, name="bench-memory", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_rss = max(self.peak_rss, self._server.memory()[0])

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._server.memory()[0])


def wait_until_ready(target: str, timeout_seconds: float = 30.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_seconds)
