"""The start's warnings about who can reach the server: plaintext on an interface other hosts
reach, and a TLS key or token file other users of the machine can read. It started in each of
those silently (the Docker image listens on 0.0.0.0, plaintext and open, by default)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from videodag_client import VideodagClient
from videodag_service.exposure_warnings import exposure_warnings
from videodag_service.settings import Settings


def _secret(tmp_path: Path, name: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text("secret\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "LOCALHOST", "localhost.",
                                  "ip6-localhost", "127.1", "::ffff:127.0.0.1"])
def test_a_server_only_this_machine_reaches_says_nothing(host: str) -> None:
    assert exposure_warnings(Settings(host=host)) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "videodag.internal"])
def test_plaintext_without_tokens_on_another_interface_says_anyone_may_call(host: str) -> None:
    (said,) = exposure_warnings(Settings(host=host, port=50051))
    assert said.startswith(f"serving plaintext without tokens or client certificates on {host} port 50051: whoever "
                           "reaches the port can run pipelines and read, cancel and delete every job")


def test_plaintext_with_tokens_on_another_interface_says_they_travel_in_clear(tmp_path: Path) -> None:
    (said,) = exposure_warnings(Settings(host="0.0.0.0", token_file=_secret(tmp_path, "tokens", 0o600)))
    assert said.startswith("serving plaintext on 0.0.0.0 port 50051: the bearer tokens, the videos and the results "
                           "cross the network in clear text")


def test_tls_without_tokens_on_another_interface_still_says_anyone_may_call(tmp_path: Path) -> None:
    """TLS proves the server to its callers, not the callers to the server."""
    settings = Settings(host="0.0.0.0", port=0, tls_cert_file=_secret(tmp_path, "server.pem", 0o644),
                        tls_key_file=_secret(tmp_path, "server.key", 0o600))
    assert exposure_warnings(settings) == [
        "serving without tokens or client certificates on 0.0.0.0: whoever reaches the port can run pipelines and "
        "read, cancel and delete every job; give it tokens (--token-file), or listen on 127.0.0.1 behind a proxy "
        "that checks callers"]
    settings = dataclasses.replace(settings, tls_client_ca_file=_secret(tmp_path, "ca.pem", 0o644))
    assert exposure_warnings(settings) == [], "mutual TLS checks the callers"


def test_tls_on_another_interface_says_nothing_of_plaintext(tmp_path: Path) -> None:
    settings = Settings(host="0.0.0.0", tls_cert_file=_secret(tmp_path, "server.pem", 0o644),
                        tls_key_file=_secret(tmp_path, "server.key", 0o600),
                        token_file=_secret(tmp_path, "tokens", 0o600))
    assert exposure_warnings(settings) == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_or_token_file_others_can_read_is_named(tmp_path: Path, mode: int) -> None:
    key, tokens = _secret(tmp_path, "server.key", mode), _secret(tmp_path, "tokens", mode)
    settings = Settings(tls_cert_file=_secret(tmp_path, "server.pem", 0o644), tls_key_file=key, token_file=tokens)
    assert exposure_warnings(settings) == [
        f"the TLS key {key} can be read by other users of this machine (mode {mode:o}): chmod 600 it",
        f"the token file {tokens} can be read by other users of this machine (mode {mode:o}): chmod 600 it",
    ]


def _server_on(host: str, tmp_path: Path, *options: str, variables: dict[str, str] | None = None
               ) -> subprocess.Popen[str]:
    """A server process on `host`, a port of its choosing, with these environment `variables` too;
    its first line of stdout says which port."""
    return subprocess.Popen(
        [sys.executable, "-m", "videodag_service.server", "--host", host, "--port", "0",
         "--temp-dir", str(tmp_path / "tmp"), "--data-dir", str(tmp_path / "data"), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(variables or {})},
    )


def _start_log(host: str, tmp_path: Path, *options: str, variables: dict[str, str] | None = None) -> str:
    """What a server on `host` writes to stderr from its start until it is told to stop, once listening."""
    server = _server_on(host, tmp_path, *options, variables=variables)
    try:
        assert server.stdout is not None
        assert "listening on" in server.stdout.readline()
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    return stderr


def test_the_server_says_it_at_start(tmp_path: Path) -> None:
    stderr = _start_log("0.0.0.0", tmp_path)
    assert "WARNING" in stderr and "serving plaintext without tokens or client certificates on 0.0.0.0:" in stderr


def test_settings_that_undo_others_are_warned_of_at_start(tmp_path: Path) -> None:
    """Each named as it was given: a container configured by variables is told of its variables."""
    stderr = _start_log("127.0.0.1", tmp_path, "--max-message-bytes", "65536",
                        variables={"VIDEODAG_UPLOAD_IDLE_TIMEOUT_SECONDS": "0"})
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    assert any("--max-message-bytes 65536 is below the 256 KiB chunks" in line for line in warnings), stderr
    assert any("VIDEODAG_UPLOAD_IDLE_TIMEOUT_SECONDS=0 turns off --upload-min-bytes-per-second 1024" in line
               for line in warnings), stderr


def test_the_listening_line_gives_an_ipv6_address_as_clients_take_it(tmp_path: Path) -> None:
    """`[::1]:PORT`, which `--server` and every gRPC client take; `::1:PORT` is none of theirs."""
    server = _server_on("::1", tmp_path)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert re.fullmatch(r"videodag-server listening on \[::1\]:\d+", line), line
        with VideodagClient(line.rpartition(" ")[2], timeout=30) as client:
            assert "frame_stats_v1" in {pipeline.id for pipeline in client.list_pipelines()}
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert re.search(r"serving videodag\.v1\.VideoPipelineService on \[::1\]:\d+ with pipelines", stderr), stderr
