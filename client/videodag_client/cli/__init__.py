"""The `videodag` command: run a pipeline on a video, list the server's pipelines.

Exit codes are listed in `videodag_client.cli._exit_codes`; errors are printed to stderr as
`error: <STATUS>: <message>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from videodag_client import VideodagError
from videodag_client.cli import _exit_codes, cancel, jobs, pipelines, render, run, submit, watch
from videodag_client.cli._connection import add_connection_arguments

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videodag",
        description="Run videodag pipelines on videos through a videodag server.",
        epilog=(
            "exit codes: 0 ok, 1 server error, 2 usage, 3 not found, 4 invalid argument, "
            "5 resource exhausted, 6 data loss, 7 unavailable or deadline exceeded, "
            "8 unauthenticated or permission denied, 130 interrupted, 141 output closed by its reader"
        ),
    )
    add_connection_arguments(parser)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(subcommands)
    pipelines.add_parser(subcommands)
    submit.add_parser(subcommands)
    watch.add_parser(subcommands)
    jobs.add_parser(subcommands)
    cancel.add_parser(subcommands)
    render.add_parser(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code (the console script exits with it)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as usage_exit:  # --help, or a usage error argparse already printed
        return usage_exit.code if isinstance(usage_exit.code, int) else _exit_codes.USAGE
    try:
        exit_code: int = args.handler(args)
    except VideodagError as error:
        _print_error(error)
        return _exit_codes.exit_code_for_status(error.code)
    except BrokenPipeError:
        # The reader of the output had enough (`videodag run -o - | head`): stop quietly, as a
        # process ended by SIGPIPE would, and point stdout at nothing so the flush at exit
        # does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _exit_codes.OUTPUT_CLOSED
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return _exit_codes.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return _exit_codes.INTERRUPTED
    return exit_code


def _print_error(error: VideodagError) -> None:
    lines = [f"error: {error.code.name}: {error.message}"]
    for violation in error.field_violations:
        line = f"{violation.field}: {violation.description}"
        if line not in error.message:  # servers often spell a lone violation out in the message
            lines.append(f"  {line}")
    if error.retry_after is not None:
        lines.append(f"  retry after {error.retry_after:g} s")
    print("\n".join(lines), file=sys.stderr)
