"""`videodag` when a proxy in front of the server answers with a plain HTTP status: the error
names the proxy and what to change, and a proxy's 413 exits as a size limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_answering_proxy import HttpAnsweringProxy

from videodag_client import Internal, Unknown
from videodag_client.cli import _exit_codes, main
from videodag_client.cli._proxy_answers import proxy_http_status

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "pedestrians_120.mp4"


def _run_through(proxy: HttpAnsweringProxy, output: Path) -> int:
    return main(["--server", f"127.0.0.1:{proxy.port}", "--timeout", "20", "run", "--pipeline", "frame_stats_v1",
                 str(SAMPLE), "-o", str(output)])


@pytest.mark.parametrize(
    ("http_status", "code", "exit_code", "hint"),
    [
        (413, "UNKNOWN", _exit_codes.RESOURCE_EXHAUSTED,
         "a proxy between here and the server refused the upload as too large (HTTP 413): raise its request body "
         "limit (nginx: client_max_body_size 0)"),
        (502, "UNAVAILABLE", _exit_codes.UNAVAILABLE,
         "a proxy between here and the server answered HTTP 502: it could not reach the videodag server"),
        (403, "PERMISSION_DENIED", _exit_codes.UNAUTHENTICATED,
         "a proxy between here and the server refused the call (HTTP 403): it wants credentials of its own, or "
         "its access rules do not let this client through"),
        (429, "UNAVAILABLE", _exit_codes.UNAVAILABLE,
         "a proxy between here and the server limits how often it may be called (HTTP 429): retry later"),
        (404, "UNIMPLEMENTED", _exit_codes.SERVER_ERROR,
         "a proxy between here and the server answered HTTP 404, not the videodag server: check that it passes "
         "gRPC (HTTP/2) through"),
    ],
)
def test_a_proxys_http_answer_is_named_with_what_to_change(
    http_status: int, code: str, exit_code: int, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with HttpAnsweringProxy(http_status) as proxy:
        assert _run_through(proxy, tmp_path / "results.jsonl") == exit_code
        assert proxy.requests == 1

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"error: {code}: Received http2 header with status: {http_status}"
    assert lines[1].startswith(f"  {hint}")
    assert len(lines) == 2
    assert not (tmp_path / "results.jsonl").exists()


def test_a_servers_own_error_quoting_the_words_is_not_taken_for_a_proxys() -> None:
    """A message of the server's may quote anything (a file's name); it has a reason, a proxy's has none."""
    quoted = Internal("cannot open 'Received http2 header with status: 413.mp4'", reason="VIDEO_UNREADABLE")
    assert proxy_http_status(quoted) is None
    assert proxy_http_status(Unknown("Received http2 header with status: 413")) == 413
    assert proxy_http_status(Unknown("Stream removed")) is None
