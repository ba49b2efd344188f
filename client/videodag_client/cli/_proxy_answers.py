"""What to tell a user when an HTTP proxy, not the videodag server, answered the call.

A proxy or load balancer in front of the server (nginx's `grpc_pass`, an ingress) that refuses
a call answers with a plain HTTP status and no gRPC status. gRPC then reports only "Received
http2 header with status: 413" as UNKNOWN (or 502 as UNAVAILABLE, 404 as UNIMPLEMENTED): words
that name neither the proxy nor what to change, and an upload refused as too large by a proxy's
body limit would otherwise exit 1, where the server's own size limit exits 5.
"""

from __future__ import annotations

import re

from videodag_client import VideodagError
from videodag_client.cli import _exit_codes

# gRPC's words for a response whose HTTP status was not 200 (a response without gRPC's status).
_HTTP_STATUS = re.compile(r"\bReceived http2 header with status: (\d{3})\b")
_PAYLOAD_TOO_LARGE = 413
_PROXY_GATEWAY_ERRORS = (502, 503, 504)
_PROXY_REFUSALS = (401, 403, 407)
_TOO_MANY_REQUESTS = 429


def proxy_http_status(error: VideodagError) -> int | None:
    """The HTTP status a proxy answered with, or None when the server's gRPC status came back.
    An error the server raised has a reason, and its message may quote anything (a file name)."""
    if error.reason:
        return None
    match = _HTTP_STATUS.search(error.message)
    return int(match.group(1)) if match else None


def proxy_answer_hint(http_status: int) -> str:
    """One line on what answered, and what to change."""
    if http_status == _PAYLOAD_TOO_LARGE:
        return ("a proxy between here and the server refused the upload as too large (HTTP 413): raise its "
                "request body limit (nginx: client_max_body_size 0); see README, Behind a reverse proxy")
    if http_status in _PROXY_REFUSALS:
        return (f"a proxy between here and the server refused the call (HTTP {http_status}): it wants credentials "
                "of its own, or its access rules do not let this client through; check them, and its log")
    if http_status == _TOO_MANY_REQUESTS:
        return ("a proxy between here and the server limits how often it may be called (HTTP 429): retry later, "
                "or ask for a higher limit")
    if http_status in _PROXY_GATEWAY_ERRORS:
        return (f"a proxy between here and the server answered HTTP {http_status}: it could not reach the "
                "videodag server (down or restarting?); retry later, or check the proxy's log")
    return (f"a proxy between here and the server answered HTTP {http_status}, not the videodag server: check "
            "that it passes gRPC (HTTP/2) through to the server, and its log")


def proxy_answer_exit_code(http_status: int, status_exit_code: int) -> int:
    """A proxy's 413 is a size limit, which the server's own exits with; other answers keep
    the exit code of the gRPC status they came as (502 as UNAVAILABLE: retry later)."""
    return _exit_codes.RESOURCE_EXHAUSTED if http_status == _PAYLOAD_TOO_LARGE else status_exit_code
