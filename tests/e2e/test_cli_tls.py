"""`videodag` over TLS against a real server: mutual TLS with --tls-cert/--tls-key, and a failed
handshake reported as a TLS failure, without gRPC's own log lines on stderr."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import grpc
import pytest
from harness import ServerFactory
from test_e2e_access_control import openssl, pki  # noqa: F401 - pki: the CA, server and client certificates

import videodag_service.video.upload as upload_module
from videodag_client import Unavailable, VideodagClient
from videodag_client.cli import _exit_codes, main


def _tls_options(pki_folder: Path, *, client_certificate: bool) -> list[str]:
    options = ["--tls-ca", str(pki_folder / "ca.pem")]
    if client_certificate:
        options += ["--tls-cert", str(pki_folder / "client.pem"), "--tls-key", str(pki_folder / "client.key")]
    return options


def test_the_cli_speaks_mutual_tls(
    make_server: ServerFactory, pki: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                         tls_client_ca_file=pki / "ca.pem")
    target = ["--server", f"localhost:{server.running.port}", "--timeout", "10"]

    assert main([*target, *_tls_options(pki, client_certificate=True), "pipelines"]) == 0
    assert "frame_stats_v1" in capsys.readouterr().out

    # The server ends the handshake by closing the socket: gRPC reports no more than that.
    assert main([*target, *_tls_options(pki, client_certificate=False), "pipelines"]) == _exit_codes.UNAVAILABLE
    error = capsys.readouterr().err
    assert "error: UNAVAILABLE" in error
    assert "requires a client certificate closes the connection this way: pass --tls-cert and --tls-key" in error


def test_a_wrong_ca_is_reported_as_a_tls_failure_without_grpc_log_lines(
    make_server: ServerFactory, pki: Path, tmp_path: Path  # noqa: F811
) -> None:
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=another CA", cwd=tmp_path)

    process = subprocess.run(
        [sys.executable, "-m", "videodag_client.cli", "--server", f"localhost:{server.running.port}",
         "--tls-ca", str(tmp_path / "other.pem"), "--timeout", "10", "pipelines"],
        capture_output=True, text=True, timeout=60,
    )

    assert process.returncode == _exit_codes.CREDENTIALS
    lines = process.stderr.splitlines()
    assert lines[0].startswith("error: TLS handshake with the server failed: check --tls-ca")
    assert "CERTIFICATE_VERIFY_FAILED" in lines[1]
    assert len(lines) == 2, f"only the CLI's own report, no gRPC log lines: {process.stderr}"


def test_a_closed_connection_gets_the_hint_that_fits_how_the_cli_connected(
    make_server: ServerFactory, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    """A client certificate the server does not trust, or plaintext to a TLS port: gRPC says
    only that the socket closed, and the CLI said nothing more."""
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                         tls_client_ca_file=pki / "ca.pem")
    target = ["--server", f"localhost:{server.running.port}", "--timeout", "10"]
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out", "stranger.pem",
            "-days", "2", "-subj", "/CN=a client of another CA", cwd=tmp_path)
    stranger = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(tmp_path / "stranger.pem"),
                "--tls-key", str(tmp_path / "stranger.key")]
    assert main([*target, *stranger, "pipelines"]) == _exit_codes.UNAVAILABLE
    assert "does not trust the client certificate closes the connection this way" in capsys.readouterr().err
    assert main([*target, "pipelines"]) == _exit_codes.UNAVAILABLE
    assert "if the server serves TLS, pass --tls (or --tls-ca)" in capsys.readouterr().err


def test_a_server_certificate_for_another_name_is_a_tls_failure(
    make_server: ServerFactory, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    (tmp_path / "elsewhere.ext").write_text("subjectAltName=DNS:elsewhere.example\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "elsewhere.key", "-out", "elsewhere.csr",
            "-subj", "/CN=elsewhere.example", cwd=tmp_path)
    openssl("x509", "-req", "-in", "elsewhere.csr", "-CA", str(pki / "ca.pem"), "-CAkey", str(pki / "ca.key"),
            "-CAcreateserial", "-out", "elsewhere.pem", "-days", "2", "-extfile", "elsewhere.ext", cwd=tmp_path)
    server = make_server(tls_cert_file=tmp_path / "elsewhere.pem", tls_key_file=tmp_path / "elsewhere.key")
    code = main(["--server", f"localhost:{server.running.port}", "--timeout", "10", "--tls-ca", str(pki / "ca.pem"),
                 "pipelines"])
    assert code == _exit_codes.CREDENTIALS
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: TLS handshake with the server failed")
    assert lines[2] == ("  the server's certificate does not hold the host name or address of --server: reach it by a "
                        "name it holds, or give that name to --tls-server-name (through a tunnel or a port-forward)")
    assert main(["--server", f"localhost:{server.running.port}", "--timeout", "10", "--tls-ca", str(pki / "ca.pem"),
                 "--tls-server-name", "nearby.example", "pipelines"]) == _exit_codes.CREDENTIALS
    assert capsys.readouterr().err.splitlines()[2] == (
        "  the server's certificate does not hold the name 'nearby.example' given to --tls-server-name: "
        "give one it holds")
    # Reached through a tunnel or a port-forward: the name the certificate holds is given.
    assert main(["--server", f"localhost:{server.running.port}", "--timeout", "10", "--tls-ca", str(pki / "ca.pem"),
                 "--tls-server-name", "elsewhere.example", "pipelines"]) == 0
    assert "frame_stats_v1" in capsys.readouterr().out


def _tls_with_the_systems_roots_reaches(make_server: ServerFactory, pki: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture[str]) -> bool:
    """Whether `videodag --tls` (no --tls-ca) lists the pipelines of a server of `pki`'s CA."""
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    listed = main(["--server", f"localhost:{server.running.port}", "--timeout", "10", "--tls", "pipelines"]) == 0
    return listed and "frame_stats_v1" in capsys.readouterr().out


def test_tls_trusts_the_systems_roots_a_company_ca_installed_included(
    make_server: ServerFactory, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """gRPC trusted a bundle of its own, without the CA update-ca-certificates had added to the
    system's: --tls refused a server every other tool on the machine trusted."""
    system_bundle = tmp_path / "ca-certificates.crt"  # the system's, with the company's CA added
    system_bundle.write_bytes((pki / "ca.pem").read_bytes())
    monkeypatch.delenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(system_bundle))  # where OpenSSL finds the system's roots
    assert _tls_with_the_systems_roots_reaches(make_server, pki, capsys)


def test_tls_trusts_the_roots_of_a_system_without_a_bundle_file(
    make_server: ServerFactory, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As on Windows, whose roots are in a store Python's default context reads, not in a file
    OpenSSL names: gRPC's own bundle was trusted instead, without a company CA in that store."""
    store = tmp_path / "store.pem"
    store.write_bytes((pki / "ca.pem").read_bytes())
    monkeypatch.delenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(store))  # what the default context loads here
    no_files = ssl.DefaultVerifyPaths(None, None, "SSL_CERT_FILE", str(tmp_path / "none.pem"), "SSL_CERT_DIR",
                                      str(tmp_path))
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: no_files)
    assert _tls_with_the_systems_roots_reaches(make_server, pki, capsys)


def test_tls_trusts_a_company_ca_in_the_systems_certificate_folder(
    make_server: ServerFactory, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SSL_CERT_DIR, as OpenSSL and curl take it (a folder of certificates, the company's among
    them): only the bundle file was read, and --tls refused the server."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=a public CA", cwd=tmp_path)
    empty, folder = tmp_path / "empty", tmp_path / "certs"
    empty.mkdir()
    folder.mkdir()
    (folder / "company.pem").write_bytes((pki / "ca.pem").read_bytes())
    # What else such a folder may hold, each sorted before the company's: gRPC reads no further
    # than a block that does not parse, and a FIFO is read forever.
    (folder / "a-readme").write_text("not a certificate\n")
    (folder / "b-binary").write_bytes(bytes(range(256)))
    (folder / "c-empty.pem").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    cut_short = (pki / "ca.pem").read_text().splitlines()
    (folder / "d-cut.pem").write_text("\n".join([*cut_short[:3], cut_short[-1]]) + "\n")
    os.mkfifo(folder / "e-fifo")
    monkeypatch.delenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))  # the bundle, without the company's CA
    monkeypatch.setenv("SSL_CERT_DIR", f"{empty}{os.pathsep}{folder}")  # a list, as OpenSSL takes it
    assert _tls_with_the_systems_roots_reaches(make_server, pki, capsys)


def test_the_library_tells_a_refused_certificate_from_a_server_that_is_down(
    make_server: ServerFactory, pki: Path, tmp_path: Path  # noqa: F811
) -> None:
    """Both were a bare Unavailable, no reason: a service retrying UNAVAILABLE without details,
    as "What to retry" says, retried a CA it will never trust for good."""
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=another CA", cwd=tmp_path)
    wrong_ca = grpc.ssl_channel_credentials((tmp_path / "other.pem").read_bytes())
    with VideodagClient(f"localhost:{server.running.port}", credentials=wrong_ca, timeout=10) as client, \
            pytest.raises(Unavailable) as refused:
        client.list_pipelines()
    assert refused.value.reason == "TLS_HANDSHAKE_FAILED"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message
    assert refused.value.retry_after is None

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        down = unused.getsockname()[1]
    with VideodagClient(f"localhost:{down}", credentials=wrong_ca, timeout=10) as client, \
            pytest.raises(Unavailable) as unreachable:
        client.list_pipelines()
    assert unreachable.value.reason == ""


def test_an_error_of_the_servers_naming_a_video_with_a_tls_word_is_not_taken_for_a_handshake(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed handshake is gRPC's UNAVAILABLE with no reason; VIDEO_FILE_MISSING names the video,
    and "handshake_test.mp4" made it "TLS handshake with the server failed", exit 8 instead of 7."""
    create = upload_module._create_private_file

    def created_then_removed(temp_dir: Path, suffix: str) -> tuple[Path, BinaryIO, int]:
        path, file, lock = create(temp_dir, suffix)
        path.unlink()  # as a cleaner of temporary files would, at once
        return path, file, lock

    monkeypatch.setattr(upload_module, "_create_private_file", created_then_removed)
    server = make_server()
    video = tmp_path / "handshake_test.mp4"
    video.write_bytes(sample_clip.read_bytes())

    code = main(["--server", server.target, "--timeout", "30", "run", str(video), "--pipeline", "frame_stats_v1",
                 "-o", str(tmp_path / "results.jsonl")])

    assert code == _exit_codes.UNAVAILABLE
    error = capsys.readouterr().err
    assert "TLS" not in error
    assert "UNAVAILABLE" in error and "'handshake_test.mp4': the server's stored copy is gone" in error
