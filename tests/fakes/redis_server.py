"""A real, private `redis-server` for tests: 127.0.0.1 only, a free port, no persistence.

`scripts/ensure_system_packages.sh` (run by the test command) installs Debian's redis-server when missing.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """Started on construction, answering PING; `stop()` ends it.

    With `tls`, a folder holding a CA (`ca.pem`) and a certificate it signed for 127.0.0.1
    (`server.pem`, `server.key`), it takes TLS connections only, and `url` (rediss://) names the CA.
    """

    def __init__(self, work_dir: Path, startup_timeout: float = 10.0, tls: Path | None = None) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self._work_dir = work_dir
        self._startup_timeout = startup_timeout
        self._tls = tls
        for tries_left in reversed(range(3)):  # another process may take the free port before redis binds it
            self.port = free_port()
            self.url = (f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={tls / 'ca.pem'}" if tls else
                        f"redis://127.0.0.1:{self.port}/0")
            try:
                self._start()
                return
            except RuntimeError:
                if not tries_left:
                    raise

    def _start(self) -> None:
        ports = ["--port", str(self.port)] if self._tls is None else [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self._tls / "server.pem"),
            "--tls-key-file", str(self._tls / "server.key"), "--tls-ca-cert-file", str(self._tls / "ca.pem"),
            "--tls-auth-clients", "no"]
        self._process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", *ports, "--save", "", "--appendonly", "no",
             "--dir", str(self._work_dir)],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        deadline = time.monotonic() + self._startup_timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def pause(self) -> None:
        """A Redis that stops answering without closing its connections, as behind a partition."""
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def restart(self, down_seconds: float) -> None:
        """An outage that loses nothing, as a failover would: the data is saved, the server is
        gone (connections refused) for `down_seconds`, then back on the same port with it."""
        self.shut_down()
        time.sleep(down_seconds)
        self.start_again()

    def shut_down(self) -> None:
        """Gone, its data saved: connections are refused until `start_again`."""
        self.client.shutdown(save=True)
        self._process.wait(10)
        self.client.close()

    def start_again(self) -> None:
        """Back on the same port, with the data saved at `shut_down`."""
        self._start()

    def save_snapshot(self) -> None:
        """Write the snapshot (dump.rdb in its folder) that `crash_to_snapshot` goes back to."""
        self.client.save()

    def crash_to_snapshot(self) -> None:
        """A crash of a Redis persisted by snapshots (or a failover to a replica that lagged):
        back on the same port with the last snapshot, every write since lost."""
        self._process.kill()
        self._process.wait(10)
        self.client.close()
        self._start()

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.client.close()
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
