"""Keeps gRPC core's informational lines out of the server's log.

gRPC core writes lines of its own straight to stderr (`I1205 ... Handshake failed with error
SSL_ERROR_SSL ...` for every peer that speaks plaintext or HTTP to a TLS port): any peer could
add them, and in `--log-format json` they are not JSON. The server logs what it must itself,
so gRPC's are kept to its errors. gRPC reads the setting once, when it is first imported, so
it is made when this package is: only in a `videodag-server` process, and never over a value
an operator set (GRPC_VERBOSITY=INFO brings the lines back).

This module must not import grpc.
"""

from __future__ import annotations

import itertools
import os
import sys

SERVER_SCRIPT = "videodag-server"
SERVER_MODULE = "videodag_service.server"


def is_server_process() -> bool:
    """Whether this process is `videodag-server` or `python -m videodag_service.server`."""
    if sys.argv and os.path.basename(sys.argv[0]) in (SERVER_SCRIPT, f"{SERVER_SCRIPT}.exe"):
        return True
    return any(flag == "-m" and module == SERVER_MODULE
               for flag, module in itertools.pairwise(getattr(sys, "orig_argv", ())))


def keep_grpc_to_its_errors() -> None:
    if is_server_process():
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
