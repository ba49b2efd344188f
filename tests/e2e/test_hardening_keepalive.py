"""The server's keepalive: every connection pinged, quiet ones included, and one whose client
answers no ping within `--keepalive-timeout-seconds` closed, failing its calls UNAVAILABLE.

A client paused whole (a debugger, a frozen VM) cannot answer; neither can one whose
connection a load balancer dropped. The timeout was fixed at gRPC's 1 min for pings and 20 s
for the sockets, which cut off healthy clients (a slow uplink queues the answer behind its
bytes), and gRPC stopped pinging a quiet connection after two pings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from harness import ServerFactory

# A client in a process of its own, so that it can be frozen: it watches the server's health, a
# stream on which nothing is sent once the first answer is in.
WATCHER = r"""
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
next(stream)
print("watching", flush=True)
try:
    next(stream)
    print("answered", flush=True)
except grpc.RpcError as error:
    print(error.code().name, error.details(), flush=True)
"""


def _frozen_for(seconds: float, target: str) -> str:
    """What a watcher frozen `seconds` (SIGSTOP) reports within a few seconds of running again."""
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, target], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "watching"
        os.kill(watcher.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(watcher.pid, signal.SIGCONT)
        return watcher.communicate(timeout=3)[0].strip()
    except subprocess.TimeoutExpired:
        return "still watching"
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_a_client_answering_no_ping_within_the_timeout_loses_its_quiet_stream(make_server: ServerFactory) -> None:
    server = make_server(keepalive_interval_seconds=1, keepalive_timeout_seconds=1)
    assert _frozen_for(6, server.target) == "UNAVAILABLE ping timeout"


def test_a_client_paused_for_less_than_the_timeout_keeps_its_stream(make_server: ServerFactory) -> None:
    server = make_server(keepalive_interval_seconds=1, keepalive_timeout_seconds=30)
    assert _frozen_for(4, server.target) == "still watching"
