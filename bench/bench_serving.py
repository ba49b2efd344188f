"""How the benchmark's own servers run: on a loopback port they announce, until SIGTERM."""

from __future__ import annotations

import signal
import threading

import grpc


def serve_on_loopback(server: grpc.Server, name: str) -> None:
    """Start `server` on a free loopback port, print 'NAME listening on 127.0.0.1:PORT' for
    `bench_server.ServerProcess`, and serve until SIGTERM."""
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"{name} listening on 127.0.0.1:{port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop(0).wait()
