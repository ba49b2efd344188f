"""Bearer tokens, TLS and mutual TLS against a real server."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ServerFactory
from jobs_harness import ServerProcess

from fakes.waiting import wait_until
from videodag.v1 import video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import Unauthenticated, Unavailable, VideodagClient
from videodag_service.auth import read_tokens
from videodag_service.server import start_server
from videodag_service.settings import Settings, SettingsError


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=videodag test CA", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extension in (("server", ["-extfile", "server.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extension, cwd=folder)
    return folder


def test_token_is_required_and_compared(make_server: ServerFactory, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# accepted tokens\nsecret-one\n\nsecret-two\n")
    server = make_server(token_file=token_file)
    with pytest.raises(Unauthenticated, match="missing bearer token") as missing:
        server.client.list_pipelines()
    with VideodagClient(server.target, token="wrong") as client, pytest.raises(Unauthenticated, match="invalid") as bad:
        client.list_pipelines()
    assert missing.value.reason == bad.value.reason == "UNAUTHENTICATED"  # ErrorInfo, as on every refusal
    with VideodagClient(server.target, token="secret-two") as client:
        assert "frame_stats_v1" in {p.id for p in client.list_pipelines()}


def test_calls_without_a_token_that_never_send_their_message_are_refused_at_once(make_server: ServerFactory) -> None:
    """They used to hold one of the server's call slots each until their caller left: 185 of them
    left health checks and every authenticated caller refused (gRPC's bare RESOURCE_EXHAUSTED)."""
    server = make_server(tokens="held-secret")
    never = threading.Event()

    def never_sent() -> Iterator[bytes]:
        never.wait(60)
        yield b""

    channels = [grpc.insecure_channel(server.target) for _ in range(4)]
    try:
        held = [
            channels[index % 4].stream_unary(
                "/videodag.v1.VideoPipelineService/ListPipelines",
                request_serializer=lambda message: message, response_deserializer=lambda message: message,
            ).future(never_sent(), timeout=60)
            for index in range(200)
        ]
        for call in held:
            assert call.exception(timeout=30).code() is grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with VideodagClient(server.target, token="held-secret") as client:
            assert "frame_stats_v1" in {pipeline.id for pipeline in client.list_pipelines()}
    finally:
        never.set()
        for channel in channels:
            channel.close()


def test_token_is_required_on_the_streaming_call_and_nothing_is_stored(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    server = make_server(tokens="streaming-secret")
    with pytest.raises(Unauthenticated) as refused:
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1"))
    assert refused.value.reason == "UNAUTHENTICATED"
    assert server.leftover_uploads() == []
    with VideodagClient(server.target, token="streaming-secret") as client:
        assert len(list(client.upload_and_run(sample_clip, "frame_stats_v1"))) == 120 + 3


def test_health_checks_stay_open_without_a_token(make_server: ServerFactory) -> None:
    server = make_server(tokens="t")
    with grpc.insecure_channel(server.target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_list_answers_every_service_and_check_names_the_services_it_knows(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """grpcio-health-checking advertises List but leaves it unimplemented: UNIMPLEMENTED, and an
    ERROR with a traceback logged at each call, which needs no token; Check of an unknown
    service said NOT_FOUND with no message."""
    server = make_server(tokens="secret")
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        listed = stub.List(health_pb2.HealthListRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="videodag.v1.Nope"), timeout=10)

    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: status.status for name, status in listed.statuses.items()} == {
        "": serving, "videodag.v1.VideoPipelineService": serving,
    }
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert unknown.value.details() == (  # type: ignore[attr-defined]
        "no health status for service 'videodag.v1.Nope'; the services are: '', 'videodag.v1.VideoPipelineService'"
    )
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_health_watches_without_a_token_are_capped_and_leave_every_other_call_served(
    make_server: ServerFactory,
) -> None:
    """A client with no token opening Watch streams had every call refused, health checks
    and authenticated callers alike, once they filled the server's call budget."""
    server = make_server(tokens="secret", max_health_watches=2)
    channel = grpc.insecure_channel(server.target)
    health_stub = health_pb2_grpc.HealthStub(channel)
    watches = [health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(2)]
    for watch in watches:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as refused:
        next(health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=30))
    # The refusal gRPC's client-side health checking takes as "healthy, not watched" (gRFC A17).
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert "maximum of 2 health watches" in refused.value.details()  # type: ignore[attr-defined]
    assert health_stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    with VideodagClient(server.target, token="secret") as client:
        assert client.list_pipelines()
    # A client that checks health by watching (gRPC's client-side health checking) still calls:
    # past the cap it is told "not watched", not "down".
    config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    with grpc.insecure_channel(server.target, options=[("grpc.service_config", json.dumps(config))]) as checking:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(checking)
        listed = stub.ListPipelines(video_pipeline_service_pb2.ListPipelinesRequest(), timeout=10,
                                    metadata=(("authorization", "Bearer secret"),))
        assert listed.pipelines
    watches[0].cancel()
    assert wait_until(lambda: _watch_opens(health_stub))  # the slot is free again once the stream ends
    channel.close()


def _watch_opens(health_stub: health_pb2_grpc.HealthStub) -> bool:
    watch = health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    try:
        return next(watch).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        watch.cancel()


def test_tls_serves_trusting_clients_and_refuses_plaintext(make_server: ServerFactory, pki: Path) -> None:
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    with VideodagClient(f"localhost:{server.running.port}", credentials=credentials) as client:
        assert client.list_pipelines()
    with pytest.raises(Unavailable):
        server.client.list_pipelines(timeout=5)


def test_mutual_tls_requires_a_client_certificate(make_server: ServerFactory, pki: Path) -> None:
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                         tls_client_ca_file=pki / "ca.pem")
    root = (pki / "ca.pem").read_bytes()
    target = f"localhost:{server.running.port}"
    with VideodagClient(target, credentials=grpc.ssl_channel_credentials(root)) as client, \
            pytest.raises(Unavailable):
        client.list_pipelines(timeout=5)
    with_certificate = grpc.ssl_channel_credentials(
        root, private_key=(pki / "client.key").read_bytes(), certificate_chain=(pki / "client.pem").read_bytes()
    )
    with VideodagClient(target, credentials=with_certificate) as client:
        assert client.list_pipelines()


def test_a_peer_speaking_plaintext_to_the_tls_port_adds_no_line_to_a_json_log(pki: Path, tmp_path: Path) -> None:
    """gRPC core wrote an `I1205 ... Handshake failed` line of its own to stderr for each one."""
    environment = {name: value for name, value in os.environ.items() if name not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    log_path = tmp_path / "server.log"
    server = ServerProcess(["--port", "0", "--temp-dir", str(tmp_path / "tmp"), "--data-dir", str(tmp_path / "data"),
                            "--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server.key"),
                            "--log-format", "json"], environment, log_path)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as peer:
                peer.sendall(b"GET / HTTP/1.1\r\nHost: scanner\r\n\r\n")
                peer.recv(1024)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        server.kill()
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines


def test_settings_refuse_half_configured_tls(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="go together"):
        Settings(tls_cert_file=pki / "server.pem")
    with pytest.raises(SettingsError, match="needs --tls-cert-file"):
        Settings(tls_client_ca_file=pki / "ca.pem")
    with pytest.raises(SettingsError, match="does not exist"):
        Settings(token_file=tmp_path / "absent")


def test_read_tokens_merges_file_and_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("a\n# comment\n  b  \n")
    assert read_tokens(token_file, " c, ,d ") == ["a", "b", "c", "d"]


def test_a_token_file_saved_with_a_byte_order_mark_keeps_its_first_token(tmp_path: Path) -> None:
    """As Notepad writes UTF-8: the mark made the first token one no client could match."""
    token_file = tmp_path / "tokens"
    token_file.write_bytes(b"\xef\xbb\xbffirst-token\nsecond-token\n")
    assert read_tokens(token_file, None) == ["first-token", "second-token"]


@pytest.mark.parametrize(("file_text", "env", "where"), [
    ("ok\n\u03c0-token\n", None, "line 2 of"),
    ("", "fine, caf\u00e9", "position 2 of the tokens setting"),
])
def test_a_token_no_header_can_carry_is_refused_saying_where_not_what(
    tmp_path: Path, file_text: str, env: str | None, where: str
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(file_text, encoding="utf-8")
    with pytest.raises(ValueError, match="is not printable ASCII") as refused:
        read_tokens(token_file, env)
    assert where in str(refused.value)
    assert "\u03c0" not in str(refused.value) and "caf" not in str(refused.value)


def test_a_key_of_another_certificate_is_refused_naming_the_pair_not_the_port(pki: Path, tmp_path: Path) -> None:
    """gRPC alone fails to bind the port and says nothing of the certificate."""
    settings = Settings(port=0, data_dir=tmp_path / "data", tls_cert_file=pki / "server.pem",
                        tls_key_file=pki / "client.key")
    refusal = r"TLS certificate .*server\.pem and key .*client\.key cannot be used together"
    with pytest.raises(ValueError, match=refusal):
        start_server(settings)


@pytest.mark.parametrize("client_ca", ["garbage.pem", "ca.key", "cut.pem"])
def test_a_client_ca_file_without_a_certificate_is_refused_naming_it_not_the_port(
    pki: Path, tmp_path: Path, client_ca: str
) -> None:
    (pki / "garbage.pem").write_text("not a certificate\n")
    ca = (pki / "ca.pem").read_text()
    (pki / "cut.pem").write_text(ca[: len(ca) // 2] + "-----END CERTIFICATE-----\n")  # a certificate cut in half
    settings = Settings(port=0, data_dir=tmp_path / "data", tls_cert_file=pki / "server.pem",
                        tls_key_file=pki / "server.key", tls_client_ca_file=pki / client_ca)
    with pytest.raises(ValueError, match=rf"TLS client CA file .*{client_ca} holds no usable PEM certificate"):
        start_server(settings)


def test_a_client_ca_file_with_a_damaged_block_after_its_certificate_still_serves(
    make_server: ServerFactory, pki: Path, tmp_path: Path
) -> None:
    """gRPC reads the certificate it can; the check at start must not refuse what gRPC would serve,
    and the client certificates that CA signed are still the ones let in."""
    damaged = tmp_path / "ca_and_damage.pem"
    damaged.write_text((pki / "ca.pem").read_text() + "-----BEGIN CERTIFICATE-----\nnot base64\n")
    server = make_server(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                         tls_client_ca_file=damaged)
    root = (pki / "ca.pem").read_bytes()
    target = f"localhost:{server.running.port}"
    with_certificate = grpc.ssl_channel_credentials(
        root, private_key=(pki / "client.key").read_bytes(), certificate_chain=(pki / "client.pem").read_bytes()
    )
    with VideodagClient(target, credentials=with_certificate) as client:
        assert [pipeline.id for pipeline in client.list_pipelines()]
    with VideodagClient(target, credentials=grpc.ssl_channel_credentials(root)) as client, \
            pytest.raises(Unavailable):
        client.list_pipelines(timeout=5)


def test_an_encrypted_key_is_refused_at_start_instead_of_waiting_for_a_passphrase(tmp_path: Path) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-keyout", "locked.key", "-out", "locked.pem", "-days", "1",
            "-subj", "/CN=localhost", "-passout", "pass:secret", cwd=tmp_path)
    settings = Settings(port=0, data_dir=tmp_path / "data", tls_cert_file=tmp_path / "locked.pem",
                        tls_key_file=tmp_path / "locked.key")
    with pytest.raises(ValueError, match=r"TLS key .*locked\.key is encrypted"):
        start_server(settings)


def test_tls_files_that_cannot_serve_are_refused_naming_the_file(pki: Path, tmp_path: Path) -> None:
    """Python's ssl said "[Errno 21] Is a directory" or "[SSL] PEM lib (_ssl.c:3905)", naming nothing."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    cases = [
        (folder, pki / "server.key", rf"TLS certificate {folder}: cannot read it: Is a directory"),
        (pki / "server.key", pki / "server.key", r"TLS certificate .*server\.key holds no usable PEM certificate"),
        (pki / "server.pem", pki / "server.pem", r"TLS key .*server\.pem holds no usable PEM private key"),
    ]
    for cert, key, refusal in cases:
        with pytest.raises(ValueError, match=refusal):
            start_server(Settings(port=0, data_dir=tmp_path / "data", tls_cert_file=cert, tls_key_file=key))


def test_a_token_file_of_comments_only_is_refused_naming_it(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("#Zx9-generated-token\n\n")
    with pytest.raises(ValueError, match=rf"at least one token is needed to require authentication: {token_file} "
                                         r"holds none \(blank lines and lines starting with # are skipped\)"):
        start_server(Settings(port=0, data_dir=tmp_path / "data", token_file=token_file))
