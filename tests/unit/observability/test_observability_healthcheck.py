"""The container's health probe against a real server's gRPC health service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from videodag_service.observability import healthcheck
from videodag_service.server import RunningServer, start_server
from videodag_service.servicer import SERVICE_NAME
from videodag_service.settings import Settings


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(
        Settings(host="127.0.0.1", port=0, temp_dir=tmp_path / "uploads", data_dir=tmp_path / "data")
    )
    yield server
    server.stop(0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_serving_server_is_healthy(running: RunningServer) -> None:
    address = f"127.0.0.1:{running.port}"
    assert healthcheck.check_health(address) == "SERVING"
    assert healthcheck.main(["--address", address, "--service", SERVICE_NAME]) == healthcheck.HEALTHY


def test_a_server_reporting_not_serving_is_unhealthy(running: RunningServer, capsys) -> None:
    running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["--address", f"127.0.0.1:{running.port}"]) == healthcheck.UNHEALTHY
    assert "NOT_SERVING" in capsys.readouterr().err


def test_no_server_is_unhealthy(capsys) -> None:
    address = f"127.0.0.1:{_free_port()}"
    assert healthcheck.main(["--address", address, "--timeout", "1"]) == healthcheck.UNHEALTHY
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_module_reads_the_port_from_the_environment_as_the_container_runs_it(running: RunningServer) -> None:
    environment = {**os.environ, "VIDEODAG_PORT": str(running.port)}
    command = [sys.executable, "-m", "videodag_service.observability.healthcheck"]
    assert subprocess.run(command, env=environment, timeout=30, check=False).returncode == 0
    environment["VIDEODAG_PORT"] = str(_free_port())
    assert subprocess.run([*command, "--timeout", "1"], env=environment, timeout=30, capture_output=True,
                          check=False).returncode == 1


def test_a_kubernetes_service_link_in_videodag_port_is_not_taken_for_the_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIDEODAG_HOST", raising=False)
    monkeypatch.setenv("VIDEODAG_PORT", "tcp://10.96.0.12:50051")
    assert healthcheck.default_address() == "127.0.0.1:50051"
    monkeypatch.setenv("VIDEODAG_PORT", "7000")
    assert healthcheck.default_address() == "127.0.0.1:7000"


def test_a_port_the_server_takes_in_exponent_form_is_the_port_the_probe_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server reads VIDEODAG_PORT=5.7103e4 as 57103; the probe asked "127.0.0.1:5.7103e4"."""
    monkeypatch.delenv("VIDEODAG_HOST", raising=False)
    monkeypatch.setenv("VIDEODAG_PORT", "5.7103e4")
    assert healthcheck.default_address() == "127.0.0.1:57103"
    monkeypatch.setenv("VIDEODAG_PORT", "http")  # the server refuses it; the probe's check fails
    assert healthcheck.default_address() == "127.0.0.1:http"


def test_a_failed_check_of_a_server_serving_tls_says_the_probe_speaks_plaintext(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's probe could never pass with TLS on, and said only UNAVAILABLE."""
    monkeypatch.setenv("VIDEODAG_TLS_CERT_FILE", "/etc/videodag/server.pem")
    assert healthcheck.main(["--address", "127.0.0.1:1", "--timeout", "1"]) == healthcheck.UNHEALTHY
    assert "this probe speaks plaintext and the server serves TLS" in capsys.readouterr().err


def test_a_failed_check_of_a_server_given_tls_by_its_flags_says_the_probe_speaks_plaintext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the variable the probe reads, it said only "Socket closed"."""
    monkeypatch.delenv("VIDEODAG_TLS_CERT_FILE", raising=False)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
                    "server.pem", "-days", "1", "-subj", "/CN=localhost"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    (tmp_path / "server.key").chmod(0o600)
    server = start_server(Settings(host="127.0.0.1", port=0, temp_dir=tmp_path / "uploads",
                                   data_dir=tmp_path / "data", tls_cert_file=tmp_path / "server.pem",
                                   tls_key_file=tmp_path / "server.key"))
    try:
        address = f"127.0.0.1:{server.port}"
        assert healthcheck.serves_tls(address)
        assert healthcheck.main(["--address", address, "--timeout", "2"]) == healthcheck.UNHEALTHY
        assert ("this probe speaks plaintext and the server serves TLS (it answers a TLS handshake)"
                in capsys.readouterr().err)
    finally:
        server.stop(0)


def test_a_server_that_does_not_answer_is_not_probed_for_tls_as_well(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen server hangs a handshake as it hangs the check: 3 s more took the probe past the
    container's 5 s timeout, which then replaced the probe's message with its own."""
    monkeypatch.delenv("VIDEODAG_TLS_CERT_FILE", raising=False)
    handshakes: list[str] = []
    monkeypatch.setattr(healthcheck, "serves_tls", lambda address, timeout_seconds: handshakes.append(address))
    with socket.socket() as silent:  # takes connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        assert healthcheck.main(["--address", address, "--timeout", "0.5"]) == healthcheck.UNHEALTHY
    assert handshakes == []
    assert f"unhealthy: {address}: DEADLINE_EXCEEDED" in capsys.readouterr().err


def test_a_plaintext_server_or_none_is_not_taken_for_one_serving_tls(running: RunningServer) -> None:
    assert not healthcheck.serves_tls(f"127.0.0.1:{running.port}", timeout_seconds=2)
    assert not healthcheck.serves_tls(f"127.0.0.1:{_free_port()}", timeout_seconds=2)
    assert not healthcheck.serves_tls(f"[::1]:{_free_port()}", timeout_seconds=2)


@pytest.mark.parametrize(("host", "address"), [
    (None, "127.0.0.1:50051"), ("0.0.0.0", "127.0.0.1:50051"), ("::", "127.0.0.1:50051"),
    ("10.1.2.3", "10.1.2.3:50051"), ("fd00::7", "[fd00::7]:50051"),
])
def test_the_probe_asks_the_host_the_server_listens_on(
    monkeypatch: pytest.MonkeyPatch, host: str | None, address: str
) -> None:
    """A container whose server listens on its pod address only was probed on loopback, and found unhealthy."""
    monkeypatch.delenv("VIDEODAG_PORT", raising=False)
    if host is None:
        monkeypatch.delenv("VIDEODAG_HOST", raising=False)
    else:
        monkeypatch.setenv("VIDEODAG_HOST", host)
    assert healthcheck.default_address() == address
