"""Settings come from flags, then environment, then defaults; bad values stop the server at start."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import IO

import pytest

from fakes.logs import why_it_ended
from fakes.python_environment import (
    NO_TEMPORARY_FOLDER,
    NO_THREAD_FOR_GRPCS_SERVING,
    READ_ONLY_SHARED_MEMORY,
    environment_running,
)
from fakes.waiting import wait_until
from videodag_service.environment_warnings import unknown_variables, unprotected_by_empty_variables
from videodag_service.server_arguments import build_parser, settings_and_sources, settings_from
from videodag_service.service_links import kubernetes_service_links, service_link_warning
from videodag_service.settings import ENV_PREFIX, MAX_SECONDS, Settings, SettingsError
from videodag_service.stop_signals import STOP_SIGNALS, Hurry
from videodag_service.video.spare_decoder import SPARE_PROCESS_NAME


def test_flag_wins_over_environment_which_wins_over_default(tmp_path: Path) -> None:
    environ = {"VIDEODAG_PORT": "6000", "VIDEODAG_MAX_UPLOAD_BYTES": "1234", "VIDEODAG_TEMP_DIR": str(tmp_path)}
    settings = settings_from(["--port", "7000", "--shutdown-grace-seconds", "2.5"], environ)
    assert settings.port == 7000
    assert settings.max_upload_bytes == 1234
    assert settings.temp_dir == tmp_path
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.max_concurrent_runs == Settings().max_concurrent_runs


def test_every_setting_has_a_flag_and_an_environment_variable_in_help() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for item in fields(Settings):
        assert "--" + item.name.replace("_", "-") in help_text
        assert ENV_PREFIX + item.name.upper() in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"], "--port must be a whole number, got 'http'"),
        (["--max-upload-bytes", "1.0005e3"], "--max-upload-bytes must be a whole number, got '1.0005e3'"),
        (["--max-upload-bytes", "2GB"], "--max-upload-bytes must be a whole number, got '2GB'"),
        # 1e999999999 took minutes to become an int, and 1e4299 a refusal of 4 KB to print.
        (["--max-upload-bytes", "1e999999999"], "--max-upload-bytes must be a whole number, of at most 19 digits when "
                                                "written with an exponent, got '1e999999999'"),
        (["--max-upload-bytes", "1e19"], "--max-upload-bytes must be a whole number, of at most 19 digits when "
                                         "written with an exponent, got '1e19'"),
        (["--max-upload-bytes", "nan"], "--max-upload-bytes must be a whole number, got 'nan'"),
        (["--upload-idle-timeout-seconds", "soon"], "--upload-idle-timeout-seconds must be a number, got 'soon'"),
        (["--max-concurrent-runs", "0"], "--max-concurrent-runs must be at least 1"),
        (["--log-level", "LOUD"], "--log-level must be DEBUG, INFO, WARNING or ERROR"),
        (["--job-backend", "kafka"], "--job-backend must be embedded or redis"),
        (["--log-format", "xml"], "--log-format must be json or text"),
        (["--pipeline-dir", "/nonexistent/pipelines"], "--pipeline-dir '/nonexistent/pipelines' does not exist"),
        (["--frame-workers", "-1"], "--frame-workers must be at least 0, got -1"),
        # A run built a billion workers' objects (MemoryError after 85 s of CPU); a server 3 million job
        # threads, then said "cannot start: " and nothing more.
        (["--frame-workers", "65"], "--frame-workers must be at most 64, got 65"),
        (["--job-workers", "3000000"], "--job-workers must be at most 256, got 3000000"),
        # Limits so short they fail every call, with no word of why (CANCELLED, or grpcurl's EOF).
        (["--result-read-timeout-seconds", "1e-6"], "--result-read-timeout-seconds must be 0 (off) or at least 1.0, "
                                                    "got 1e-06"),
        (["--reflection-idle-timeout-seconds", "0.0001"],
         "--reflection-idle-timeout-seconds must be 0 (off) or at least 0.5, got 0.0001"),
        (["--max-connection-age-seconds", "0.999"],
         "--max-connection-age-seconds must be 0 (off) or at least 1.0, got 0.999"),
        (["--node-timeout-seconds", "nan"], "--node-timeout-seconds must be a number of seconds, got nan"),
        # 70000 listened on 4464 (70000 - 65536); a metrics port or message size beyond range was a traceback.
        (["--port", "70000"], "--port must be at most 65535, got 70000"),
        (["--metrics-port", "65536"], "--metrics-port must be at most 65535, got 65536"),
        # The metrics endpoint took the port first, and the server then said "the port is in use".
        (["--port", "52763", "--metrics-port", "52763"],
         "--metrics-port must differ from the gRPC port: both are 52763"),
        (["--max-message-bytes", "3000000000"], "--max-message-bytes must be at most 2147483647, got 3000000000"),
        # `--token-file "$TOKEN_FILE"` with the variable unset served with no authentication at all.
        (["--token-file", ""], 'token_file was given empty (--token-file ""): give a value, or leave the flag out to '
                               "turn it off"),
        (["--tls-cert-file", "", "--tls-key-file", ""], "tls_cert_file was given empty"),
        # `--pipeline-dir "$PIPELINES"` with the variable unset served the built-in pipelines.
        (["--pipeline-dir", ""], 'pipeline_dir was given empty (--pipeline-dir ""): give a value, or leave the flag '
                                 "out to keep its default"),
        (["--max-upload-bytes", ""], "max_upload_bytes was given empty"),
        (["--host", ""], "host was given empty"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from(argv, {})


@pytest.mark.parametrize(("flag", "value", "attribute"), [
    ("--frame-workers", "64", "frame_workers"),
    ("--job-workers", "256", "job_workers"),
    ("--result-read-timeout-seconds", "0", "result_read_timeout_seconds"),
    ("--result-read-timeout-seconds", "1", "result_read_timeout_seconds"),
    ("--reflection-idle-timeout-seconds", "0", "reflection_idle_timeout_seconds"),
    ("--reflection-idle-timeout-seconds", "0.5", "reflection_idle_timeout_seconds"),
    ("--max-connection-age-seconds", "0", "max_connection_age_seconds"),
    ("--max-connection-age-seconds", "1", "max_connection_age_seconds"),
])
def test_the_edges_of_the_new_bounds_are_accepted(flag: str, value: str, attribute: str) -> None:
    assert getattr(settings_from([flag, value], {}), attribute) == float(value)


@pytest.mark.parametrize(("written", "value"), [
    ("1e9", 10**9), ("5E8", 5 * 10**8), ("1.5e3", 1500), ("1000.0", 1000), ("1_000_000", 10**6),
    ("9999999999999999999e0", 9999999999999999999), ("0e99999999", 0),
])
def test_a_whole_number_written_in_exponent_form_is_taken_exactly(written: str, value: int) -> None:
    """An operator writes a size of a gigabyte as 1e9; it was refused as not an int."""
    assert settings_from(["--job-min-free-bytes", written], {}).job_min_free_bytes == value
    assert settings_from([], {"VIDEODAG_JOB_MIN_FREE_BYTES": written}).job_min_free_bytes == value


@pytest.mark.parametrize(("environ", "message"), [
    ({"VIDEODAG_LOG_FORMAT": "xml"}, "VIDEODAG_LOG_FORMAT must be json or text, got 'xml'"),
    ({"VIDEODAG_PORT": "abc"}, "VIDEODAG_PORT must be a whole number, got 'abc'"),
    ({"VIDEODAG_MAX_CONCURRENT_RUNS": "0"}, "VIDEODAG_MAX_CONCURRENT_RUNS must be at least 1, got 0"),
    ({"VIDEODAG_PIPELINE_DIR": "/nonexistent"}, "VIDEODAG_PIPELINE_DIR '/nonexistent' does not exist"),
])
def test_a_bad_value_from_the_environment_is_named_by_its_variable(environ: dict[str, str], message: str) -> None:
    """A server configured by a dozen variables is told which one, not a name it never wrote."""
    with pytest.raises(SettingsError) as raised:
        settings_from([], environ)
    assert str(raised.value) == message


def test_a_flag_overriding_a_bad_variable_is_what_counts() -> None:
    assert settings_from(["--log-format", "text"], {"VIDEODAG_LOG_FORMAT": "xml"}).log_format == "text"
    with pytest.raises(SettingsError) as raised:
        settings_from(["--log-format", "yaml"], {"VIDEODAG_LOG_FORMAT": "json"})
    assert str(raised.value) == "--log-format must be json or text, got 'yaml'"


def test_a_protecting_variable_set_empty_means_unset_and_is_named_when_it_leaves_the_server_unprotected(
    tmp_path: Path,
) -> None:
    """Compose files write `${VIDEODAG_TOKENS:-}` for "none": refusing it stopped deployments
    from starting, while serving unprotected without a word hid a forgotten variable."""
    token_file = tmp_path / "tokens"
    token_file.write_text("secret\n")
    environ = {ENV_PREFIX + "TOKENS": "", ENV_PREFIX + "TLS_CLIENT_CA_FILE": ""}
    assert unprotected_by_empty_variables(settings_from([], environ), environ) == [
        ENV_PREFIX + "TOKENS", ENV_PREFIX + "TLS_CLIENT_CA_FILE"]
    with_file = {**environ, ENV_PREFIX + "TOKEN_FILE": str(token_file)}
    settings = settings_from([], with_file)
    assert settings.requires_token  # the token file protects: an empty TOKENS beside it is no gap
    assert unprotected_by_empty_variables(settings, with_file) == [ENV_PREFIX + "TLS_CLIENT_CA_FILE"]


def test_variables_the_server_does_not_read_are_named_and_a_cli_token_without_server_tokens_is_a_warning(
    tmp_path: Path,
) -> None:
    """A misspelt or renamed setting was ignored without a word; the CLI's VIDEODAG_TOKEN set for
    the server left it answering every call with no token."""
    environ = {
        ENV_PREFIX + "TOKEN": "s3cret",
        ENV_PREFIX + "JOB_RETENTION": "60",
        ENV_PREFIX + "FROBNICATE": "1",
        ENV_PREFIX + "MAX_UPLOAD_BYTES": "1000",  # read: said nothing of
        ENV_PREFIX + "SERVER": "localhost:50051",  # the CLI's, harmless here
        ENV_PREFIX + "MODEL_DIR": str(tmp_path),
        # Kubernetes' links for Services named videodag and videodag-redis: not ours to judge.
        ENV_PREFIX + "SERVICE_HOST": "10.0.0.1", ENV_PREFIX + "SERVICE_PORT_GRPC": "50051",
        ENV_PREFIX + "PORT_50051_TCP_ADDR": "10.0.0.1", ENV_PREFIX + "REDIS_PORT": "tcp://10.0.0.2:6379",
        ENV_PREFIX + "MAX_UPLOADS": "5", ENV_PREFIX + "TLS_CA_FILE": "/ca.pem",
        "OTHER_TOKEN": "x",
    }
    assert unknown_variables(settings_from([], environ), environ) == [
        "VIDEODAG_FROBNICATE is not a setting of the server: ignored",
        "VIDEODAG_JOB_RETENTION is not a setting of the server: ignored (did you mean VIDEODAG_JOB_RETENTION_SECONDS?)",
        "VIDEODAG_MAX_UPLOADS is not a setting of the server: ignored (did you mean VIDEODAG_MAX_JOB_UPLOADS or "
        "VIDEODAG_MAX_UPLOAD_BYTES?)",
        "VIDEODAG_TLS_CA_FILE is not a setting of the server: ignored (did you mean VIDEODAG_TLS_CLIENT_CA_FILE?)",
        "VIDEODAG_TOKEN is the videodag CLI's token to send, not read by the server: it requires no token; give it "
        "VIDEODAG_TOKENS or VIDEODAG_TOKEN_FILE",
    ]
    protected = {**environ, ENV_PREFIX + "TOKENS": "s3cret"}
    assert [said for said in unknown_variables(settings_from([], protected), protected) if "TOKEN" in said] == []


def test_other_settings_given_empty_in_the_environment_keep_their_default() -> None:
    assert settings_from([], {ENV_PREFIX + "MAX_UPLOAD_BYTES": ""}).max_upload_bytes == Settings().max_upload_bytes


@pytest.mark.parametrize("given", ["inf", "1e12", "1000000000000"])
def test_a_time_beyond_31_years_is_taken_as_31_years(given: str) -> None:
    """As a retention, inf ("keep forever") or 1e12 gave finished jobs an expiry no Timestamp
    holds, and every lookup failed; as a time limit, inf meant "none", which 31 years still does."""
    settings = settings_from(["--job-retention-seconds", given, "--job-timeout-seconds", given], {})
    assert settings.job_retention_seconds == settings.job_timeout_seconds == MAX_SECONDS == 1e9
    assert Settings(job_retention_seconds=10**12).job_retention_seconds == MAX_SECONDS


@pytest.mark.parametrize(("given", "message"), [
    ({"port": True}, "port must be a whole number, got True"),
    ({"port": "80"}, "port must be a whole number, got '80'"),
    ({"max_queued_jobs": 1.5}, "max_queued_jobs must be a whole number, got 1.5"),
    ({"job_timeout_seconds": "5"}, "job_timeout_seconds must be a number, got '5'"),
    ({"job_timeout_seconds": False}, "job_timeout_seconds must be a number, got False"),
    ({"host": 5}, "host must be text, got 5"),
    ({"log_format": None}, "log_format must be text, got None"),
    ({"temp_dir": b"/tmp"}, "temp_dir must be a path, got b'/tmp'"),
    ({"pipeline_dir": ""}, "pipeline_dir must be a path, got ''"),  # not ".", the folder it started in
    ({"token_file": ""}, "token_file must be a path, got ''"),
])
def test_a_value_of_the_wrong_kind_given_in_python_is_refused_naming_the_setting(
    given: dict[str, object], message: str
) -> None:
    """No flag converts it there: port=True was port 1, and port="80" a TypeError from a comparison."""
    with pytest.raises(SettingsError) as refused:
        Settings(**given)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_a_folder_given_in_python_as_text_is_taken_as_its_path(tmp_path: Path) -> None:
    settings = Settings(temp_dir=str(tmp_path / "uploads"), pipeline_dir=str(tmp_path))  # type: ignore[arg-type]
    assert settings.temp_dir == tmp_path / "uploads" and isinstance(settings.temp_dir, Path)
    assert settings.pipeline_dir == tmp_path and isinstance(settings.pipeline_dir, Path)
    assert Settings(job_timeout_seconds=5).job_timeout_seconds == 5, "a whole number is a number of seconds"


def test_a_kubernetes_service_link_in_videodag_port_is_no_port_and_is_ignored() -> None:
    """A Service named videodag gives every pod of its namespace VIDEODAG_PORT=tcp://IP:PORT,
    over the image's own 50051: the server refused to start (VIDEODAG_PORT must be a whole number)."""
    link = {"VIDEODAG_PORT": "tcp://10.96.0.12:50051"}
    assert kubernetes_service_links(link) == link
    assert settings_from([], link).port == Settings().port
    assert settings_from(["--port", "7000"], link).port == 7000
    assert kubernetes_service_links({"VIDEODAG_PORT": "7000"}) == {}
    assert settings_from([], {"VIDEODAG_PORT": "7000"}).port == 7000
    metrics_link = {"VIDEODAG_METRICS_PORT": "tcp://[fd00:10:96::1a]:9464"}  # a Service named videodag-metrics
    assert kubernetes_service_links(metrics_link) == metrics_link
    assert settings_from([], metrics_link).metrics_port == Settings().metrics_port


def test_a_service_link_warning_says_what_the_server_does_instead() -> None:
    """The image sets VIDEODAG_METRICS_PORT=9464 and the server's own default is off: a Service
    named videodag-metrics, its link over the image's value, turned the metrics off, and the
    warning said only "ignored"."""
    link = "tcp://10.0.0.6:9464"
    metrics = service_link_warning("VIDEODAG_METRICS_PORT", link, settings_from([], {"VIDEODAG_METRICS_PORT": link})
                                   .metrics_port)
    assert "ignored, so metrics are off; set VIDEODAG_METRICS_PORT=9464 (the image's) in the pod spec" in metrics
    assert "enableServiceLinks: false" in metrics
    chosen = service_link_warning("VIDEODAG_METRICS_PORT", link, 9100)
    assert "ignored, so it uses port 9100" in chosen
    port = service_link_warning("VIDEODAG_PORT", "tcp://10.0.0.5:50051", 50051)
    assert port.startswith("VIDEODAG_PORT=tcp://10.0.0.5:50051 is a Kubernetes service link")
    assert "ignored, so it uses port 50051; set VIDEODAG_PORT in the pod spec to use another" in port


def test_a_server_whose_standard_output_is_closed_serves_on(tmp_path: Path) -> None:
    """`videodag-server | true`: printing the listening line raised BrokenPipeError after the server
    had started, and it exited 1 saying "cannot start", without draining."""
    server = subprocess.Popen(
        [sys.executable, "-m", "videodag_service.server", "--port", "0", "--temp-dir", str(tmp_path / "t"),
         "--data-dir", str(tmp_path / "d"), "--log-level", "INFO", "--log-format", "text"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None and server.stderr is not None
    server.stdout.close()  # no reader: the first line written there fails
    said: list[str] = []

    def read_the_log(log: IO[str]) -> None:
        for line in log:
            said.append(line)

    reader = threading.Thread(target=read_the_log, args=(server.stderr,), daemon=True)
    reader.start()
    try:
        # The server says it could not print the listening line, or ends: the asserts below say which.
        assert wait_until(lambda: server.poll() is not None or any(
            "could not print the listening address" in line for line in said), timeout=60), "".join(said)
        assert server.poll() is None, "".join(said)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        reader.join(timeout=10)
        errors = "".join(said)
        assert server.returncode == 0 and "cannot start" not in errors, errors
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videodag_service.server", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_server_exits_with_a_clear_message_on_a_bad_setting() -> None:
    completed = run_server("--max-upload-bytes", "-5")
    assert completed.returncode == 2
    assert "videodag-server: --max-upload-bytes must be at least 1, got -5" in completed.stderr


def test_server_refuses_to_start_on_an_invalid_pipeline(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(textwrap.dedent("""
        id: broken
        version: "1"
        nodes:
          - id: detect
            plugin: nosuch.detect
            inputs: {image: frame.image}
        outputs:
          found: detect.detections
    """))
    completed = run_server("--pipeline-dir", str(tmp_path), "--port", "0", "--data-dir", str(tmp_path / "data"))
    assert completed.returncode == 1
    assert "cannot start" in completed.stderr
    assert f"{tmp_path / 'broken.yaml'}: node 'detect': unknown plugin 'nosuch'" in completed.stderr


def test_server_with_a_temp_folder_too_long_for_a_unix_socket_names_tmpdir(tmp_path: Path) -> None:
    long_folder = tmp_path / ("t" * 100)
    long_folder.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "videodag_service.server", "--port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "TMPDIR": str(long_folder)},
    )
    assert completed.returncode == 1
    assert why_it_ended(completed.stderr).startswith(
        f"cannot start: decoder processes cannot start: their forkserver's socket goes in a folder under {long_folder} "
        "(TMPDIR), too long a path for a Unix socket")
    assert list(long_folder.iterdir()) == [], "its multiprocessing folder is removed"


def _refusal_to_start(tmp_path: Path, environment: dict[str, str], port: int = 0) -> str:
    """What a server given its folders in `tmp_path` says as it refuses to start (exit 1): the last
    line of its log, which is JSON lines to its end, the refusal included (logger and level tell it)."""
    completed = subprocess.run(
        [sys.executable, "-m", "videodag_service.server", "--port", str(port), "--temp-dir", str(tmp_path / "uploads"),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, check=False, env=environment,
    )
    assert completed.returncode == 1, completed.stderr
    entries = [json.loads(line) for line in completed.stderr.splitlines()]
    assert (entries[-1]["logger"], entries[-1]["level"]) == ("videodag_service.server", "CRITICAL")
    return why_it_ended(completed.stderr)


def test_a_server_on_a_port_in_use_says_so_in_a_log_of_json_lines_alone(tmp_path: Path) -> None:
    """gRPC core's own line ("E1207 ... add_port.cc:83] Failed to add port to server: ...") came
    first: the one line of a `--log-format json` log a log pipeline could not read."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = _refusal_to_start(tmp_path, dict(os.environ), port)
    assert said == f"cannot start: could not listen on 127.0.0.1:{port}: Address already in use (another process " \
        "listens on the port)"


def test_a_server_with_no_shared_memory_for_its_decoders_refuses_to_start_saying_why(tmp_path: Path) -> None:
    """A container with a read-only /dev/shm (or none): the server started, said it was healthy,
    and failed every run INTERNAL "internal error: OSError"."""
    environment = environment_running(tmp_path, READ_ONLY_SHARED_MEMORY)
    assert _refusal_to_start(tmp_path, environment) == (
        "cannot start: decoder processes cannot hand frames over: no shared memory can be made in "
        "/dev/shm (Read-only file system); its operator must mount a writable tmpfs there, or have the servers "
        "decode in threads (--decode-isolation thread)")


def test_a_server_whose_grpc_start_fails_once_its_port_is_bound_exits_saying_why(tmp_path: Path) -> None:
    """gRPC's port, bound, stayed open and its threads held the process: the server said it
    could not start and never exited, deaf to SIGTERM, its clients' calls hanging."""
    environment = environment_running(tmp_path, NO_THREAD_FOR_GRPCS_SERVING)
    assert _refusal_to_start(tmp_path, environment) == "cannot start: can't start new thread"


def test_a_server_with_no_writable_temporary_folder_says_to_set_tmpdir(tmp_path: Path) -> None:
    """A read-only root filesystem (a container's) with TMPDIR unset: Python finds no temporary
    folder. Importing the settings failed with a traceback, `--help` too; starting, with the
    folders given on a writable volume, said only which folders Python had tried."""
    environment = environment_running(tmp_path, NO_TEMPORARY_FOLDER)
    for variable in ("TMPDIR", "TEMP", "TMP"):
        environment.pop(variable, None)
    helped = subprocess.run([sys.executable, "-m", "videodag_service.server", "--help"], capture_output=True,
                            text=True, timeout=120, check=False, env=environment)
    assert (helped.returncode, helped.stderr) == (0, ""), helped.stderr
    assert "--temp-dir" in helped.stdout
    assert _refusal_to_start(tmp_path, environment) == (
        "cannot start: decoder processes cannot start: their forkserver's socket goes in a temporary "
        "folder, and none is writable (No usable temporary directory found in ['/nonexistent/videodag-test']); set "
        "TMPDIR to a writable folder (on the volume of --temp-dir, say)")


def test_a_server_out_of_memory_as_it_starts_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """MemoryError() has no message of its own: the server said "cannot start: " and nothing more."""
    import videodag_service.server as server_module

    def out_of_memory(settings: Settings) -> None:
        raise MemoryError()

    monkeypatch.setattr(server_module, "serve", out_of_memory)
    monkeypatch.setattr(server_module, "turn_off_core_dumps", lambda: None)
    monkeypatch.setattr(server_module, "_open_files_up_to_the_hard_limit", lambda: None)
    assert server_module.main(["--port", "0", "--data-dir", str(tmp_path / "data"), "--log-format", "text"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "videodag-server: cannot start: MemoryError"


def test_frame_workers_default_to_one_per_core_and_the_setting_overrides_them(tmp_path: Path) -> None:
    from videodag_service.cores import usable_cores
    from videodag_service.dag import DagPipelineService
    from videodag_service.dag.service import MAX_DEFAULT_FRAME_WORKERS
    from videodag_service.server import start_server

    for given, expected in ((0, min(usable_cores(), MAX_DEFAULT_FRAME_WORKERS)), (3, 3)):
        dag = DagPipelineService.from_folder()
        settings = settings_from(["--port", "0", "--frame-workers", str(given)],
                                 {"VIDEODAG_DATA_DIR": str(tmp_path / f"data{given}")})
        running = start_server(settings, dag)
        try:
            assert dag.frame_workers == expected
        finally:
            running.stop(0)


def _warnings_at_start(caplog: pytest.LogCaptureFixture, arguments: list[str], data_dir: Path) -> list[str]:
    """What a server started with `arguments` (on a free port) warns of, stopped at once."""
    from videodag_service.dag import DagPipelineService
    from videodag_service.server import start_server

    settings = settings_from(["--port", "0", *arguments], {"VIDEODAG_DATA_DIR": str(data_dir)})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videodag_service.server"):
        running = start_server(settings, DagPipelineService.from_folder())
    running.stop(0)
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_the_server_warns_at_start_when_its_upload_folder_is_open_to_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, mode in (("private", 0o700), ("shared", 0o755), ("sticky", 0o1777)):
        folder = tmp_path / name
        folder.mkdir()
        folder.chmod(mode)
        said = _warnings_at_start(caplog, ["--temp-dir", str(folder)], tmp_path / f"data-{name}")
        warnings = [message for message in said if "/dev/shm" not in message]
        if name == "private":
            assert warnings == []
        else:
            shown = f"{mode & 0o777:04o}"
            assert len(warnings) == 1 and f"upload folder {folder} is open to other users (mode {shown})" in warnings[0]


def test_the_server_warns_at_start_when_dockers_64_mib_of_shared_memory_cannot_hold_its_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that found /dev/shm full failed RESOURCE_EXHAUSTED, after a start that said nothing."""
    from videodag_service.video import frame_ring

    statvfs = os.statvfs

    def dockers_shared_memory(path: str) -> os.statvfs_result:
        if path != "/dev/shm":
            return statvfs(path)
        blocks = 64 * 1024 * 1024 // 4096
        return os.statvfs_result((4096, 4096, blocks, blocks, blocks, 1000, 1000, 1000, 0, 255))

    monkeypatch.setattr(frame_ring.os, "statvfs", dockers_shared_memory)
    for runs, warned in ((4, True), (2, False)):  # and two embedded jobs
        said = [message for message in _warnings_at_start(caplog, ["--max-concurrent-runs", str(runs)],
                                                          tmp_path / f"data-{runs}") if "/dev/shm" in message]
        assert said == ([f"/dev/shm holds 64 MiB, and {runs + 2} runs at once of 1080p video need "
                         f"{(runs + 2) * 2 * 1920 * 1080 * 3 / 2**20:.0f} MiB of it for their decoded frames: runs "
                         "that find it full fail RESOURCE_EXHAUSTED; give the server more shared memory (docker run "
                         "--shm-size 256m), or fewer runs at once"] if warned else [])


def test_a_second_server_on_a_port_in_use_does_not_start(tmp_path: Path) -> None:
    """Not silently sharing the port (SO_REUSEPORT), with its own jobs behind the same address."""
    from videodag_service.dag import DagPipelineService
    from videodag_service.server import start_server

    others = _spare_decoders()
    first = start_server(settings_from(["--port", "0"], {"VIDEODAG_DATA_DIR": str(tmp_path / "first")}),
                         DagPipelineService.from_folder())
    try:
        second_settings = settings_from(["--port", str(first.port)], {"VIDEODAG_DATA_DIR": str(tmp_path / "second")})
        with pytest.raises(OSError, match=f"could not listen on 127.0.0.1:{first.port}: Address already in use "
                                          r"\(another process listens on the port\)"):
            start_server(second_settings, DagPipelineService.from_folder())
        # The first server's spare decoder process is left; the second ended its own.
        assert wait_until(lambda: len(_spare_decoders() - others) == 1), _spare_decoders()
    finally:
        first.stop(0)
    assert _spare_decoders() - others == set()


def test_a_failed_start_leaves_no_data_folder_it_made_and_keeps_one_it_found(tmp_path: Path) -> None:
    """The new data folder held only an empty store and upload folders; one that existed keeps its jobs."""
    from videodag_service.dag import DagPipelineService
    from videodag_service.server import start_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        new = tmp_path / "new" / "jobs"
        settings = settings_from(["--port", str(port)], {"VIDEODAG_DATA_DIR": str(new),
                                                         "VIDEODAG_TEMP_DIR": str(tmp_path / "new" / "uploads")})
        with pytest.raises(OSError, match=f"could not listen on 127.0.0.1:{port}"):
            start_server(settings, DagPipelineService.from_folder())
        assert not (tmp_path / "new").exists()

        found = tmp_path / "found"
        found.mkdir(mode=0o700)
        (found / "notes.txt").write_text("the operator's")
        settings = settings_from(["--port", str(port)], {"VIDEODAG_DATA_DIR": str(found),
                                                         "VIDEODAG_TEMP_DIR": str(tmp_path / "uploads")})
        with pytest.raises(OSError, match=f"could not listen on 127.0.0.1:{port}"):
            start_server(settings, DagPipelineService.from_folder())
        assert {entry.name for entry in found.iterdir()} == {"notes.txt", "jobs.sqlite3", "jobs.lock", "uploads"}


def test_a_start_that_loses_the_data_folder_to_another_leaves_that_ones_jobs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers starting at once on a new data folder both find it missing; the one that
    loses its lock must not take the store the other opened with it."""
    from videodag_service import server as server_module
    from videodag_service.dag import DagPipelineService
    from videodag_service.jobs import DataDirectoryInUse

    data_dir = tmp_path / "new" / "jobs"
    found_missing = server_module.missing_folders(data_dir)  # as the loser saw it, before the winner started
    winner = server_module.start_server(
        settings_from(["--port", "0"], {"VIDEODAG_DATA_DIR": str(data_dir),
                                        "VIDEODAG_TEMP_DIR": str(tmp_path / "uploads1")}),
        DagPipelineService.from_folder())
    try:
        before = sorted(path.name for path in data_dir.rglob("*"))
        monkeypatch.setattr(server_module, "missing_folders",
                            lambda path: found_missing if path == data_dir else [])
        with pytest.raises(DataDirectoryInUse):
            server_module.start_server(
                settings_from(["--port", "0"], {"VIDEODAG_DATA_DIR": str(data_dir),
                                                "VIDEODAG_TEMP_DIR": str(tmp_path / "uploads2")}),
                DagPipelineService.from_folder())
        assert sorted(path.name for path in data_dir.rglob("*")) == before
        assert {"jobs.sqlite3", "jobs.lock", "uploads", "incoming"} <= set(before)
    finally:
        winner.stop(0)


def _spare_decoders() -> set[int | None]:
    return {process.pid for process in multiprocessing.active_children() if process.name == SPARE_PROCESS_NAME}


def test_the_server_removes_at_start_the_uploads_a_killed_server_left(tmp_path: Path) -> None:
    from videodag_service.dag import DagPipelineService
    from videodag_service.server import start_server
    from videodag_service.video import receive_upload

    temp_dir = tmp_path / "uploads"
    temp_dir.mkdir(mode=0o700)
    left = temp_dir / "videodag-upload-killed00.mp4"
    left.write_bytes(b"half a video")
    an_hour_ago = time.time() - 3600
    os.utime(left, (an_hour_ago, an_hour_ago))
    with receive_upload(temp_dir, max_upload_bytes=100) as live:  # another server's, sharing the folder
        os.utime(live.path, (an_hour_ago, an_hour_ago))
        settings = settings_from(["--port", "0", "--temp-dir", str(temp_dir)],
                                 {"VIDEODAG_DATA_DIR": str(tmp_path / "data")})
        start_server(settings, DagPipelineService.from_folder()).stop(0)
        assert not left.exists()
        assert live.path.exists()


def test_rq_workers_get_the_servers_frame_workers_or_one_per_core_of_their_own() -> None:
    from videodag_service.cores import usable_cores
    from videodag_service.dag.service import MAX_DEFAULT_FRAME_WORKERS
    from videodag_service.jobs.rq_task import _loaded_dag
    from videodag_service.server import job_config

    assert job_config(settings_from(["--frame-workers", "3"], {})).frame_workers == 3
    assert job_config(settings_from([], {})).frame_workers is None
    assert _loaded_dag(None, None, 3, None).frame_workers == 3
    assert _loaded_dag(None, 5.0, None, None).frame_workers == min(usable_cores(), MAX_DEFAULT_FRAME_WORKERS)


def test_rq_workers_get_the_servers_result_size_limit() -> None:
    from videodag_service.jobs.rq_task import WorkerConfig, _dag
    from videodag_service.server import job_config

    config = job_config(settings_from(["--max-message-bytes", "1048576"], {}))
    assert config.max_result_bytes == 1048576 - 1024
    worker_config = WorkerConfig(key_prefix="k", upload_dir="/u", pipeline_dir=None, job_timeout_seconds=1.0,
                                 retention_seconds=1.0, lease_seconds=1.0, video_limits={},
                                 max_result_bytes=config.max_result_bytes)
    assert _dag(worker_config).max_result_bytes == 1048576 - 1024


@contextmanager
def signal_handlers_put_back() -> Iterator[None]:
    """The process's stop-signal handlers as they were once the block ends: `serve` installs its own."""
    handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


class _StartedServer:
    """What `serve` drives once started: records how it was asked to stop."""

    port = 1234

    def __init__(self) -> None:
        self.hurried: list[bool] = []

    def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None, cause: str = "") -> None:
        self.hurried.append(hurry is not None and hurry.is_set())


def test_a_signal_while_the_server_starts_is_a_clean_stop_not_the_default_kill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recovered jobs run from the start on: the default action would end them as a crash does."""
    from videodag_service import server as server_module

    started = _StartedServer()

    def start_while_signalled(settings: Settings) -> _StartedServer:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the server is still starting
        return started

    def as_the_default_would(signum: int, frame: object) -> None:
        raise AssertionError("the signal found no handler of the server's: the process would have ended")

    monkeypatch.setattr(server_module, "start_server", start_while_signalled)
    with signal_handlers_put_back():
        signal.signal(signal.SIGTERM, as_the_default_would)  # stands in for the default, which would end pytest
        server_module.serve(Settings(port=0))
    assert started.hurried == [False], "stopped once, with its grace"


def test_a_signal_that_lands_on_another_thread_still_starts_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads (gRPC's, the decoders'); the
    Python handler then waits for the main thread to run, which an endless wait never did."""
    from videodag_service import server as server_module

    started = _StartedServer()
    main_thread = threading.get_ident()
    served = threading.Event()

    def signal_from_another_thread() -> None:
        time.sleep(0.1)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # this thread, not the main one
        # A backstop so a regression fails the test instead of hanging it: wake the main thread.
        if not served.wait(5):
            signal.pthread_kill(main_thread, signal.SIGTERM)

    def start_and_get_signalled(settings: Settings) -> _StartedServer:
        threading.Thread(target=signal_from_another_thread, daemon=True).start()
        return started

    monkeypatch.setattr(server_module, "start_server", start_and_get_signalled)
    began = time.monotonic()
    with signal_handlers_put_back():
        try:
            server_module.serve(Settings(port=0))
        finally:
            served.set()
    assert time.monotonic() - began < 4, "the drain waited for something else to wake the main thread"
    assert started.hurried == [False]


def test_a_second_signal_ends_the_drain_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from videodag_service import server as server_module

    class _Draining(_StartedServer):
        def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None,
                 cause: str = "") -> None:
            assert hurry is not None
            os.kill(os.getpid(), signal.SIGINT)  # someone presses Ctrl-C again during the drain
            assert hurry.wait(5)
            super().stop(grace_seconds, hurry)

    started = _Draining()

    def start_and_get_signalled(settings: Settings) -> _StartedServer:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return started

    monkeypatch.setattr(server_module, "start_server", start_and_get_signalled)
    with signal_handlers_put_back():
        server_module.serve(Settings(port=0))
    assert started.hurried == [True]


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


@contextmanager
def locks_taken_by_this_thread() -> Iterator[list[str]]:
    """Where this thread takes a lock within the block: a signal's handler runs in it too."""
    taken: list[str] = []

    def note_locks(frame: FrameType, event: str, called: object) -> None:
        if (event == "c_call" and getattr(called, "__name__", "") in ("acquire", "__enter__")
                and isinstance(getattr(called, "__self__", None), _LOCK_TYPES)):
            taken.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")

    sys.setprofile(note_locks)
    try:
        yield taken
    finally:
        sys.setprofile(None)


def test_stop_signals_take_no_lock_in_the_thread_they_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler runs in the main thread between two of its bytecodes, also while that thread holds
    a lock: inside `Event.wait`, as its timeout ends, the Event's own. A handler that set that Event
    waited for its own thread's lock for good: a server under load did not stop on SIGTERM."""
    from videodag_service import server as server_module

    taken: list[str] = []

    class _Draining(_StartedServer):
        def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None, cause: str = "") -> None:
            with locks_taken_by_this_thread() as by_the_second:
                os.kill(os.getpid(), signal.SIGINT)
            taken.extend(by_the_second)
            super().stop(grace_seconds, hurry, cause)

    started = _Draining()

    def start_and_get_signalled(settings: Settings) -> _StartedServer:
        with locks_taken_by_this_thread() as by_the_first:
            os.kill(os.getpid(), signal.SIGTERM)
        taken.extend(by_the_first)
        return started

    monkeypatch.setattr(server_module, "start_server", start_and_get_signalled)
    with signal_handlers_put_back():
        server_module.serve(Settings(port=0))
    assert taken == [], "a stop signal's handler took a lock"
    assert started.hurried == [True], "the second signal ended the drain at once"


def test_a_hangup_drains_the_server_as_sigterm_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its default action ended the server at once: no drain, and each running job charged an attempt."""
    from videodag_service import server as server_module

    causes: list[str] = []

    class _Stopping(_StartedServer):
        def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None,
                 cause: str = "") -> None:
            causes.append(cause)

    def start_and_get_hung_up(settings: Settings) -> _StartedServer:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGHUP)).start()
        return _Stopping()

    monkeypatch.setattr(server_module, "start_server", start_and_get_hung_up)
    with signal_handlers_put_back():
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a terminal leaves it, even for tests run under nohup
        server_module.serve(Settings(port=0))
    assert causes == ["SIGHUP"]


def test_an_ignored_hangup_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nohup videodag-server &` must outlive the terminal it was started from."""
    from videodag_service import server as server_module

    causes: list[str] = []

    class _Stopping(_StartedServer):
        def stop(self, grace_seconds: float | None = None, hurry: Hurry | None = None,
                 cause: str = "") -> None:
            causes.append(cause)

    def start_then_hang_up_then_terminate(settings: Settings) -> _StartedServer:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGHUP)).start()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return _Stopping()

    monkeypatch.setattr(server_module, "start_server", start_then_hang_up_then_terminate)
    with signal_handlers_put_back():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        server_module.serve(Settings(port=0))
    assert causes == ["SIGTERM"]


def test_a_second_signal_while_the_server_starts_gives_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that hangs (a job store out of reach) must not take SIGKILL to end."""
    from videodag_service import server as server_module

    def a_start_that_hangs(settings: Settings) -> _StartedServer:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("the second signal did not end the start")

    monkeypatch.setattr(server_module, "start_server", a_start_that_hangs)
    with signal_handlers_put_back(), pytest.raises(SystemExit) as ended:
        server_module.serve(Settings(port=0))
    assert ended.value.code == 128 + signal.SIGTERM


def test_a_worker_runs_a_job_queued_with_settings_newer_than_itself(caplog: pytest.LogCaptureFixture) -> None:
    from videodag_service.jobs.rq_task import WorkerConfig

    config = WorkerConfig(key_prefix="k", upload_dir="/u", pipeline_dir=None, job_timeout_seconds=1.0,
                          retention_seconds=1.0, lease_seconds=1.0, video_limits={}, frame_workers=2)
    queued = {**config.to_json(), "a_setting_from_a_later_release": 7}
    queued["video_limits"] = {"max_width": 640, "a_limit_from_a_later_release": 1}
    with caplog.at_level(logging.WARNING, logger="videodag_service.jobs.rq_task"):
        assert WorkerConfig.from_json(queued) == dataclasses.replace(config, video_limits={"max_width": 640})
    assert "ignoring the settings a_setting_from_a_later_release" in caplog.text
    assert "ignoring the settings video_limits.a_limit_from_a_later_release" in caplog.text


def test_the_job_backends_a_setting_accepts_are_those_the_jobs_package_has() -> None:
    from typing import get_args

    from videodag_service.jobs import JobBackend
    from videodag_service.settings import JobBackendName

    assert set(get_args(JobBackendName)) == {backend.value for backend in JobBackend}


@pytest.mark.parametrize("bug", [ValueError("a bug's own words"), RuntimeError("a bug's own words")])
def test_an_unexpected_error_while_starting_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bug: Exception
) -> None:
    """Only the start errors the server expects are said in one line, "cannot start: ...": a bug
    must not pass for a problem of the configuration, and its traceback is what finds it."""
    from videodag_service import server as server_module

    def a_start_with_a_bug(settings: Settings) -> _StartedServer:
        raise bug

    monkeypatch.setattr(server_module, "start_server", a_start_with_a_bug)
    argv = ["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d")]
    with signal_handlers_put_back(), pytest.raises(type(bug), match="a bug's own words"):
        server_module.main(argv)
    assert "cannot start" not in capsys.readouterr().err


def test_a_start_stopped_by_its_configuration_says_why_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from videodag_service import server as server_module
    from videodag_service.jobs import DataDirectoryInUse

    def a_start_on_a_data_folder_in_use(settings: Settings) -> _StartedServer:
        raise DataDirectoryInUse(f"another process serves jobs from {settings.data_dir}")

    monkeypatch.setattr(server_module, "start_server", a_start_on_a_data_folder_in_use)
    argv = ["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d")]
    with signal_handlers_put_back():
        assert server_module.main(argv) == 1
    said = capsys.readouterr().err
    assert len(said.splitlines()) == 1, said
    assert why_it_ended(said) == f"cannot start: another process serves jobs from {tmp_path / 'd'}"


@pytest.mark.parametrize(("arguments", "environment", "said"), [
    (["--job-backend", "redis", "--redis-url", "foo"], {},
     "--redis-url 'foo' cannot be used: Redis URL must specify one of the following schemes"),
    (["--job-backend", "redis", "--redis-url", "redis://127.0.0.1:notaport/0"], {},
     "--redis-url 'redis://127.0.0.1:notaport/0' cannot be used: Port could not be cast"),
    # The README has the password put in this URL: a typo elsewhere in it copied it into the log.
    (["--job-backend", "redis"], {"VIDEODAG_REDIS_URL": "redis://:Sup3rSecret@127.0.0.1:notaport/0"},
     "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:notaport/0' cannot be used: Port could not be cast"),
    # redis-py reads `:Sup3r/Secret@...` as the port Sup3r, and says so; `?` and `#` cut it short too.
    (["--job-backend", "redis"], {"VIDEODAG_REDIS_URL": "redis://:Sup3r/Secret@127.0.0.1:6379/0"},
     "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:6379/0' cannot be used: Port could not be cast to integer "
     "value as '***'"),
    (["--job-backend", "redis"], {"VIDEODAG_REDIS_URL": "redis://:Sup3r?Secret@127.0.0.1:6379/0"},
     "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:6379/0' cannot be used: Port could not be cast to integer "
     "value as '***'"),
    (["--job-backend", "redis"], {"VIDEODAG_REDIS_URL": "redis://:Sup3r#Secret@127.0.0.1:6379/0"},
     "VIDEODAG_REDIS_URL 'redis://***@127.0.0.1:6379/0' cannot be used: Port could not be cast"),
    (["--job-backend", "redis"], {"VIDEODAG_REDIS_URL": "rediss2://user:Sup3rSecret@127.0.0.1:6379/0"},
     "VIDEODAG_REDIS_URL 'rediss2://***@127.0.0.1:6379/0' cannot be used: Redis URL must specify"),
    (["--job-backend", "redis", "--redis-url", "redis://127.0.0.1:notaport/0?password=Sup3rSecret"], {},
     "--redis-url 'redis://127.0.0.1:notaport/0?***' cannot be used: Port could not be cast"),
])
def test_a_redis_url_redis_py_cannot_read_is_a_bad_setting_named_as_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    arguments: list[str], environment: dict[str, str], said: str,
) -> None:
    """Found as the job store opened, it was a failed start (exit 1) naming --redis-url, where a
    container had given VIDEODAG_REDIS_URL; a bad value of any other setting exits 2 naming it."""
    from videodag_service import server as server_module

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    argv = ["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d"), *arguments]
    with signal_handlers_put_back():
        assert server_module.main(argv) == 2
    said_in_full = capsys.readouterr().err
    assert said_in_full.startswith(f"videodag-server: {said}") and len(said_in_full.splitlines()) == 1, said_in_full
    assert "Sup3r" not in said_in_full, "no password is shown"


def test_a_redis_url_is_not_read_for_the_embedded_job_store() -> None:
    """A leftover VIDEODAG_REDIS_URL in an embedded server's environment is no reason to refuse it."""
    settings, given_as = settings_and_sources(["--port", "0"], environ={"VIDEODAG_REDIS_URL": "not a url"})
    assert settings.job_backend == "embedded" and given_as["redis_url"] == "VIDEODAG_REDIS_URL"


@pytest.mark.parametrize(("arguments", "environment", "said"), [
    (["--tracing", "otel"], {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "-5"},
     "tracing cannot be set up from the OTEL_* variables: schedule_delay_millis must be positive"),
])
def test_an_otel_variable_the_library_cannot_read_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    arguments: list[str], environment: dict[str, str], said: str,
) -> None:
    """OpenTelemetry refuses such values with a ValueError, which passed for a bug: a traceback."""
    from videodag_service import server as server_module

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    argv = ["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d"), *arguments]
    with signal_handlers_put_back():
        assert server_module.main(argv) == 1
    said_in_full = capsys.readouterr().err
    assert why_it_ended(said_in_full).startswith(f"cannot start: {said}")
    assert "Sup3r" not in said_in_full, "no password is shown"


@pytest.mark.parametrize(("given", "host", "address"), [
    ("[::1]", "::1", "[::1]:50051"),
    ("[::]", "::", "[::]:50051"),
    ("::", "::", "[::]:50051"),
    (" 0.0.0.0 ", "0.0.0.0", "0.0.0.0:50051"),
    ("localhost", "localhost", "localhost:50051"),
])
def test_an_ipv6_host_is_taken_with_or_without_its_brackets(given: str, host: str, address: str) -> None:
    """`[::]` as URLs write it (and the image's health check takes): once bracketed, not twice."""
    settings = settings_from(["--host", given], {})
    assert (settings.host, settings.address) == (host, address)
    assert settings_from([], {"VIDEODAG_HOST": given}).address == address


@pytest.mark.parametrize("given", ["unix:/run/videodag.sock", "127.0.0.1,::1", "127.0.0.1 ::1", "[]", "[[::1]]"])
def test_a_host_that_is_not_one_tcp_address_is_refused_as_such(given: str) -> None:
    """gRPC would take a socket path or a list, then fail to bind it without saying why."""
    with pytest.raises(SettingsError, match=r"--host must be one IP address or host name of this machine \(the "
                                            r"server listens on TCP; 0\.0\.0\.0 or :: listens on all its IPv4 "
                                            rf"and IPv6 addresses\), got {re.escape(repr(given))}"):
        settings_from(["--host", given], {})


@pytest.mark.parametrize(("host", "reason"), [
    ("nosuchhost.invalid", r"the host name does not resolve \(.+\)"),
    ("192.0.2.1", r"Cannot assign requested address \(the host is not an address of this machine\)"),
])
def test_a_port_that_cannot_be_bound_is_refused_with_the_systems_reason(tmp_path: Path, host: str,
                                                                        reason: str) -> None:
    """Not the same guess for every cause: gRPC says only "Failed to bind"."""
    from videodag_service.dag import DagPipelineService
    from videodag_service.server import start_server

    settings = settings_from(["--host", host, "--port", "0"], {"VIDEODAG_DATA_DIR": str(tmp_path / "jobs"),
                                                               "VIDEODAG_TEMP_DIR": str(tmp_path / "uploads")})
    with pytest.raises(OSError, match=f"could not listen on {re.escape(host)}:0: {reason}$"):
        start_server(settings, DagPipelineService.from_folder())


@pytest.mark.parametrize("given", ["0.0.0.0:50051", "localhost:50051", "[::1]:50051"])
def test_a_host_given_with_its_port_is_refused_naming_the_port_option(given: str) -> None:
    with pytest.raises(SettingsError, match=rf"--host takes no port: give the port with --port \(VIDEODAG_PORT\), "
                                            rf"got {re.escape(repr(given))}"):
        settings_from(["--host", given], {})


@pytest.mark.parametrize("setting", ["--temp-dir", "--data-dir"])
def test_a_folder_whose_path_opencv_cannot_open_videos_under_is_refused_at_start(
    tmp_path: Path, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV takes a path as UTF-8: a byte that is not UTF-8 crashed its decoder (SIGSEGV), and
    under a Latin-1 locale `tmp-ñ` named other bytes, so every video was "not a video"."""
    not_utf8 = os.fsdecode(bytes(tmp_path) + b"/tmp-\xe9")
    with pytest.raises(SettingsError, match=rf"^{setting} '.*tmp-\\udce9': OpenCV opens videos by their path "
                                            "written in UTF-8, which is not how this path is written on disk"):
        settings_from([setting, not_utf8], {})

    latin1 = str(tmp_path / "tmp-ñ")
    assert settings_from([setting, latin1], {}) is not None  # UTF-8 file names: the same bytes
    monkeypatch.setattr(os, "fsencode", lambda text: os.fspath(text).encode("latin-1"))  # a Latin-1 locale's
    with pytest.raises(SettingsError, match="choose a path in ASCII"):
        settings_from([setting, latin1], {})


@pytest.mark.parametrize(("max_message_bytes", "warned"), [
    ("65536", True), ("262147", True), ("262148", False), (None, False),
])
def test_a_message_limit_below_the_clients_default_chunks_is_warned_of_at_start(
    max_message_bytes: str | None, warned: bool,
) -> None:
    argv = [] if max_message_bytes is None else ["--max-message-bytes", max_message_bytes]
    warning = settings_from(argv, {}).small_message_limit_warning()
    if not warned:
        assert warning is None
        return
    assert warning == settings_from(argv, {}).small_message_limit_warning(given_as={}), "a flag is the default"
    assert warning == (f"--max-message-bytes {max_message_bytes} is below the 256 KiB chunks the videodag client and "
                       "CLI send by default: their uploads are refused (RESOURCE_EXHAUSTED, \"Received message larger "
                       "than max\") unless given a smaller chunk size (chunk_size=, --chunk-size)")


@pytest.mark.parametrize(("argv", "rate_said"), [
    (["--upload-idle-timeout-seconds", "0"], "1024"),
    (["--upload-idle-timeout-seconds", "0", "--upload-min-bytes-per-second", "1"], "1"),
    (["--upload-idle-timeout-seconds", "0", "--upload-min-bytes-per-second", "0"], None),
    (["--upload-idle-timeout-seconds", "0.5"], None),
    ([], None),
])
def test_a_minimum_upload_rate_the_idle_limit_turns_off_is_warned_of_at_start(
    argv: list[str], rate_said: str | None
) -> None:
    warning = settings_from(argv, {}).unenforced_min_rate_warning()
    if rate_said is None:
        assert warning is None
        return
    assert warning == (
        f"--upload-idle-timeout-seconds 0 turns off --upload-min-bytes-per-second {rate_said} too: an upload may "
        "send as slowly as it likes and hold its slot; set an idle limit to keep the minimum rate, or the rate to 0 "
        "to say it is off"
    )


@pytest.mark.parametrize(("argv", "environ", "said"), [
    ([], {ENV_PREFIX + "UPLOAD_IDLE_TIMEOUT_SECONDS": "0"},
     "VIDEODAG_UPLOAD_IDLE_TIMEOUT_SECONDS=0 turns off --upload-min-bytes-per-second 1024 too"),
    (["--upload-min-bytes-per-second", "7"], {ENV_PREFIX + "UPLOAD_IDLE_TIMEOUT_SECONDS": "0"},
     "VIDEODAG_UPLOAD_IDLE_TIMEOUT_SECONDS=0 turns off --upload-min-bytes-per-second 7 too"),
    (["--upload-idle-timeout-seconds", "0"], {ENV_PREFIX + "UPLOAD_MIN_BYTES_PER_SECOND": "7"},
     "--upload-idle-timeout-seconds 0 turns off VIDEODAG_UPLOAD_MIN_BYTES_PER_SECOND=7 too"),
    ([], {ENV_PREFIX + "MAX_MESSAGE_BYTES": "65536"}, "VIDEODAG_MAX_MESSAGE_BYTES=65536 is below the 256 KiB chunks"),
    (["--max-message-bytes", "65536"], {ENV_PREFIX + "MAX_MESSAGE_BYTES": "1"},
     "--max-message-bytes 65536 is below the 256 KiB chunks"),
])
def test_a_start_warning_names_each_setting_as_it_was_given(
    argv: list[str], environ: dict[str, str], said: str
) -> None:
    """A container configured by variables is told of its variables, not of flags it never wrote."""
    settings, given_as = settings_and_sources(argv, environ)
    warnings = [settings.small_message_limit_warning(given_as), settings.unenforced_min_rate_warning(given_as)]
    assert [warning for warning in warnings if warning is not None and warning.startswith(said)] != [], warnings
