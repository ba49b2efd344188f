"""Keeps gRPC's C-core log lines off the `videodag` command's stderr.

gRPC core writes lines such as `E1203 ... ssl_transport_security.cc ... Handshake failed`
straight to stderr, and reads its log settings (GRPC_VERBOSITY, GRPC_TRACE) once, when
`grpc` is first imported. The command reports every error itself, so those lines are only
noise there; but the package's own `__init__` imports grpc before the command's module runs,
so the setting has to be made here, first thing, and only when the process is the command.
A library user's process is left alone, as is a value the user set (to debug gRPC).

This module must not import grpc; importing it makes the setting.
"""

from __future__ import annotations

import itertools
import os
import sys

CLI_MODULE = "videodag_client.cli"
CLI_SCRIPT = "videodag"


def running_as_cli() -> bool:
    """Whether this process is the `videodag` console script or `python -m videodag_client.cli`."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in (CLI_SCRIPT, f"{CLI_SCRIPT}.exe"):
        return True
    original = list(getattr(sys, "orig_argv", ()))
    return any(flag == "-m" and module in (CLI_MODULE, f"{CLI_MODULE}.__main__")
               for flag, module in itertools.pairwise(original))


def quiet_grpc_logs() -> None:
    """Turns gRPC core's own logging off unless the user configured it; effective before grpc is imported."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")


def quiet_grpc_logs_if_cli() -> None:
    if running_as_cli():
        quiet_grpc_logs()


quiet_grpc_logs_if_cli()
