"""Exit codes of the `videodag` command, one per kind of failure a script may branch on.

    0   success
    1   any other server error (INTERNAL, UNKNOWN, CANCELLED, ...); a request the server refused in
        the state it found (FAILED_PRECONDITION: cancel a finished job, delete a running one, an
        idempotency key reused for another submission); or output that could not be written (a
        full disk), once the command ran
    2   usage error, including a video, output or CA file that cannot be opened
    3   NOT_FOUND: unknown pipeline
    4   INVALID_ARGUMENT: bad options, unreadable video
    5   RESOURCE_EXHAUSTED: a server limit (size, duration, concurrent runs), or a proxy's body
        limit (HTTP 413, which gRPC reports as UNKNOWN)
    6   DATA_LOSS: the upload arrived damaged
    7   UNAVAILABLE or DEADLINE_EXCEEDED: server unreachable, draining or too slow; retry later
    8   UNAUTHENTICATED or PERMISSION_DENIED: check the token; or the TLS handshake failed
        (UNAVAILABLE from gRPC, but no retry helps): check --tls-ca, --tls-cert, --tls-key
    129 hung up (SIGHUP: the terminal closed), handled as SIGTERM is
    130 interrupted (Ctrl-C, SIGINT)
    141 the reader of the output went away (`videodag run -o - | head`), as for SIGPIPE
    143 terminated (SIGTERM), which `run` and `watch` handle as they handle Ctrl-C
"""

from __future__ import annotations

import grpc

SUCCESS = 0
SERVER_ERROR = 1
OUTPUT_NOT_WRITTEN = SERVER_ERROR
USAGE = 2
NOT_FOUND = 3
INVALID_ARGUMENT = 4
RESOURCE_EXHAUSTED = 5
DATA_LOSS = 6
UNAVAILABLE = 7
UNAUTHENTICATED = 8
CREDENTIALS = UNAUTHENTICATED
HUNG_UP = 129
INTERRUPTED = 130
OUTPUT_CLOSED = 141
TERMINATED = 143

_EXIT_CODE_BY_STATUS = {
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED,
    grpc.StatusCode.DATA_LOSS: DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: UNAUTHENTICATED,
}


def exit_code_for_status(code: grpc.StatusCode) -> int:
    return _EXIT_CODE_BY_STATUS.get(code, SERVER_ERROR)
