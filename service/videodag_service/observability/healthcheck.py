"""Ask a server's gRPC health service whether it is SERVING; the exit code says (0 yes, 1 no).

    python -m videodag_service.observability.healthcheck                  # 127.0.0.1:$VIDEODAG_PORT
    python -m videodag_service.observability.healthcheck --address host:50051 --service videodag.v1.VideoPipelineService

It is the container's HEALTHCHECK: grpc_health_probe is a separate download, while this
needs only packages the server already has. A draining server answers NOT_SERVING, so an
orchestrator stops sending it work before it goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from videodag_service.service_links import kubernetes_service_links
from videodag_service.written_numbers import whole_number

PORT_ENV = "VIDEODAG_PORT"
HOST_ENV = "VIDEODAG_HOST"
TLS_ENV = "VIDEODAG_TLS_CERT_FILE"
DEFAULT_PORT = "50051"
HEALTHY = 0
UNHEALTHY = 1


def default_address() -> str:
    """The server in this container, on the host and port it reads from the environment:
    loopback when it listens on every interface (or the host is not set)."""
    host = os.environ.get(HOST_ENV) or ""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get(PORT_ENV) or DEFAULT_PORT
    if PORT_ENV in kubernetes_service_links(os.environ):  # not the server's port: it ignores the variable too
        port = DEFAULT_PORT
    with contextlib.suppress(ValueError):  # as the server reads it ("5e4" too); else as written, to fail
        port = str(whole_number(port))
    return f"{host}:{port}"


def check_health(address: str, service: str = "", timeout_seconds: float = 3.0) -> str:
    """The health status name ("SERVING", "NOT_SERVING", ...); raises grpc.RpcError if unreachable."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def serves_tls(address: str, timeout_seconds: float = 3.0) -> bool:
    """Whether a TLS handshake at `address` succeeds: a server given TLS by its flags, not the
    variable this probe reads, closes a plaintext probe's connection with nothing more said.
    The certificate is not checked: only whether TLS is spoken there."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_seconds) as connection, \
                context.wrap_socket(connection):
            return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError: plaintext, or nothing, is there
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m videodag_service.observability.healthcheck",
        description="Exit 0 when the videodag server's gRPC health service answers SERVING, else 1.",
    )
    parser.add_argument("--address", default=default_address(), help="HOST:PORT (default %(default)s)")
    parser.add_argument("--service", default="", help="service name to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="deadline of the check")
    args = parser.parse_args(argv)
    try:
        status = check_health(args.address, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"unhealthy: {args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        # A TLS server closes a plaintext probe's connection at once, and answers a handshake as
        # fast: a check that ran out of time met a server that hangs, whose handshake would hang
        # too, and past the container's 5 s timeout this message would be lost with the probe.
        tls_could_be_why = error.code() != grpc.StatusCode.DEADLINE_EXCEEDED
        if os.environ.get(TLS_ENV) or (tls_could_be_why and serves_tls(args.address, min(args.timeout, 1.0))):
            why = f"{TLS_ENV} is set" if os.environ.get(TLS_ENV) else "it answers a TLS handshake"
            print(f"this probe speaks plaintext and the server serves TLS ({why}): give the container "
                  "a health check that speaks TLS, such as grpc_health_probe -tls", file=sys.stderr)
        return UNHEALTHY
    if status != "SERVING":
        print(f"unhealthy: {args.address}: {status}", file=sys.stderr)
        return UNHEALTHY
    return HEALTHY


if __name__ == "__main__":
    raise SystemExit(main())
