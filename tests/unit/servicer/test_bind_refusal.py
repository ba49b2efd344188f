"""The port check made before gRPC binds: it refuses only what gRPC would fail on too."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest

from videodag_service import bind_failures
from videodag_service.bind_failures import bind_failure_reason, bind_refusal


def test_a_port_another_process_listens_on_is_refused_before_grpc_tries_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert bind_refusal("127.0.0.1", port, sure_only=True) == (
            "Address already in use (another process listens on the port)")


def test_a_failure_grpc_may_get_past_is_left_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--host ::` on a kernel without IPv6: a plain socket cannot bind it, and gRPC listens on
    0.0.0.0 instead; refused before gRPC tried, the server would not have started."""

    class NoIpv6Socket(socket.socket):
        def bind(self, address: Any) -> None:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))

    monkeypatch.setattr(bind_failures.socket, "socket", NoIpv6Socket)
    assert bind_refusal("::", 0, sure_only=True) is None
    assert bind_failure_reason("::", 0) == os.strerror(errno.EAFNOSUPPORT), "said once gRPC has failed too"
