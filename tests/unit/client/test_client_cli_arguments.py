"""Numbers, addresses and TLS files the CLI refuses up front as usage errors (exit 2), not tracebacks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    frame_response,
    summary_response,
    video_info_response,
)

from videodag_client import _grpc_logging
from videodag_client.cli import _exit_codes, build_parser, main

RUN = ["run", "clip.mp4", "--pipeline", "motion_v1"]


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        ([*RUN, "--stride", "3000000000"], "--stride"),
        ([*RUN, "--stride", "-1"], "--stride"),
        ([*RUN, "--max-frames", "99999999999999999999"], "--max-frames"),
        ([*RUN, "--start", "nan"], "--start"),
        ([*RUN, "--start", "inf"], "--start"),
        ([*RUN, "--start", "1e20"], "--start"),
        ([*RUN, "--end=-inf"], "--end"),
        (["submit", "clip.mp4", "--pipeline", "motion_v1", "--stride", "3000000000"], "--stride"),
        (["watch", "JOB", "--after", "99999999999999999999"], "--after"),
        (["watch", "JOB", "--after", "-2"], "--after"),
        (["watch", "JOB", "--reconnect-window", "nan"], "--reconnect-window"),
        (["watch", "JOB", "--reconnect-window", "-1"], "--reconnect-window"),
        (["jobs", "--limit", "-1"], "--limit"),
        (["pipelines", "--timeout", "0"], "--timeout"),
        (["pipelines", "--timeout", "-1"], "--timeout"),
        (["pipelines", "--timeout", "nan"], "--timeout"),
        (["pipelines", "--timeout", "inf"], "--timeout"),
        (["--timeout", "1e300", "pipelines"], "--timeout"),
    ],
)
def test_numbers_out_of_their_fields_range_are_usage_errors(
    arguments: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", "127.0.0.1:9", *arguments]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert f"error: argument {option}: " in error
    assert "Traceback" not in error


LATIN1 = os.fsdecode(b"\xe9t\xe9")  # "été" typed in Latin-1: not UTF-8, held by Python as lone surrogates


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ([*RUN[:3], LATIN1], "--pipeline"),
        (["submit", "clip.mp4", "--pipeline", LATIN1], "--pipeline"),
        (["submit", "clip.mp4", "--pipeline", "motion_v1", "--idempotency-key", LATIN1], "--idempotency-key"),
        (["watch", LATIN1], "JOB"),
        (["cancel", LATIN1], "JOB"),
        (["jobs", "show", LATIN1], "JOB"),
        (["jobs", "delete", LATIN1], "JOB"),
        (["pipelines", "show", LATIN1], "ID"),
        (["pipelines", "--server", f"{LATIN1}:50051"], "--server"),
    ],
)
def test_text_for_the_server_that_is_not_utf8_is_a_usage_error(
    target: str, servicer: FakeVideoPipelineServicer, arguments: list[str], argument: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--server", target, *arguments]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert f"error: argument {argument}: not valid UTF-8: b'\\xe9t\\xe9" in error, error
    assert servicer.requests == []


def test_a_server_in_the_environment_that_is_not_utf8_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIDEODAG_SERVER", f"{LATIN1}:50051")
    assert main(["pipelines"]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert error.startswith("error: VIDEODAG_SERVER=") and "not valid UTF-8: b'\\xe9t\\xe9:50051'" in error, error


def test_a_video_whose_name_is_not_utf8_is_run(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, tmp_path: Path
) -> None:
    servicer.run_script = [AcknowledgeUpload(), video_info_response(fps=25.0, frame_count=1),
                           frame_response(0, 25.0, {"n": 0}), summary_response(1)]
    latin1 = video_path.rename(tmp_path / f"{LATIN1}.mp4")
    output = tmp_path / f"{LATIN1}.jsonl"

    assert main(["--server", target, "run", str(latin1), "--pipeline", "motion_v1", "-q", "-o", str(output)]) == 0

    assert servicer.config.file_name == "\ufffdt\ufffd.mp4"
    assert [json.loads(line)["frame_index"] for line in output.read_text().splitlines()] == [0]


@pytest.mark.parametrize(
    ("server", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("http://localhost:50051", "not a http:// URL"),
        ("https://example.com:443", "not a https:// URL"),
        ("localhost:99999", "from 1 to 65535"),
        ("localhost:0", "from 1 to 65535"),
        ("localhost:port", "from 1 to 65535"),
        ("localhost", "needs a port"),
        ("::1", "in brackets"),
        ("[::1]", "needs a port"),
        (":50051", "no host"),
        (" localhost:50051", "has spaces around it"),
        ("localhost:\uff15\uff10\uff10\uff15\uff11", "from 1 to 65535"),
        ("ipv4:127.0.0.1", "needs a port"),
        ("ipv4:127.0.0.1:50051,127.0.0.2", "needs a port"),
        ("ipv6:[::1]", "needs a port"),
        ("unix:", "names no socket"),
    ],
)
def test_bad_server_addresses_are_usage_errors(server: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server, "pipelines"]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert "argument --server: " in error and says in error


def test_a_bad_server_in_the_environment_is_a_usage_error_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIDEODAG_SERVER", "localhost:70000")
    assert main(["pipelines"]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert error.startswith("error: VIDEODAG_SERVER='localhost:70000': the port must be a number from 1 to 65535")
    assert "--server" not in error, "the user gave no --server"


def test_an_empty_server_in_the_environment_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from videodag_client.cli._connection import _server_from_environment

    monkeypatch.setenv("VIDEODAG_SERVER", "")
    assert _server_from_environment() == "localhost:50051"
    monkeypatch.setenv("VIDEODAG_SERVER", "example.org:7000")
    assert _server_from_environment() == "example.org:7000"


@pytest.mark.parametrize(
    "server", ["localhost:50051", "127.0.0.1:1", "[::1]:50051", "dns:///localhost:50051", "unix:/tmp/videodag.sock",
               "ipv4:127.0.0.1:50051,127.0.0.2:50051", "ipv6:[::1]:50051"]
)
def test_good_server_addresses_are_accepted(server: str) -> None:
    assert build_parser().parse_args(["--server", server, "pipelines"]).server == server


def _pem_problem(*arguments: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--server", "127.0.0.1:9", *arguments, "pipelines"]) == _exit_codes.USAGE
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


def test_a_tls_ca_that_is_not_pem_or_cannot_be_read_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello\n")
    assert _pem_problem("--tls-ca", str(not_pem), capsys=capsys).startswith(
        f"error: --tls-ca {not_pem}: not a PEM file with a certificate"
    )
    absent = tmp_path / "absent.pem"
    assert _pem_problem("--tls-ca", str(absent), capsys=capsys).startswith(
        f"error: --tls-ca {absent}: cannot read it: No such file or directory"
    )
    assert "cannot read it" in _pem_problem("--tls-ca", str(tmp_path), capsys=capsys)


def test_a_client_certificate_needs_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--tls-cert and --tls-key go together" in _pem_problem(
        "--tls-cert", str(tmp_path / "client.pem"), capsys=capsys
    )
    assert "--tls-cert and --tls-key go together" in _pem_problem(
        "--tls-key", str(tmp_path / "client.key"), capsys=capsys
    )
    certificate = tmp_path / "client.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert "not a PEM file with a private key" in _pem_problem(
        "--tls-cert", str(certificate), "--tls-key", str(certificate), capsys=capsys
    )


@pytest.mark.parametrize(
    ("argv", "orig_argv", "is_cli"),
    [
        (["/venv/bin/videodag", "run"], ["/venv/bin/python", "/venv/bin/videodag", "run"], True),
        (["-m", "run"], ["python", "-m", "videodag_client.cli", "run"], True),
        (["app.py"], ["python", "app.py"], False),
        (["-m"], ["python", "-m", "myservice"], False),
    ],
)
def test_grpc_logging_is_quieted_only_for_the_command(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], orig_argv: list[str], is_cli: bool
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    monkeypatch.setenv("GRPC_TRACE", "http")  # the user's own choice is kept

    _grpc_logging.quiet_grpc_logs_if_cli()

    assert os.environ.get("GRPC_VERBOSITY") == ("NONE" if is_cli else None)
    assert os.environ["GRPC_TRACE"] == "http"


def test_a_token_with_a_line_break_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIDEODAG_TOKEN", "secret\n")  # as read from a file, unstripped
    error = _pem_problem(capsys=capsys)
    assert "--token (or VIDEODAG_TOKEN): token must be printable ASCII with no line break" in error
