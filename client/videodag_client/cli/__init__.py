"""The `videodag` command: run a pipeline on a video, list the server's pipelines.

Exit codes are listed in `videodag_client.cli._exit_codes`; errors are printed to stderr as
`error: <STATUS>: <message>`. gRPC's own log lines are kept off stderr (see
`videodag_client._grpc_logging`; setting GRPC_VERBOSITY brings them back).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from types import FrameType

import grpc

from videodag_client import VideodagError
from videodag_client._errors import TLS_HANDSHAKE_FAILED
from videodag_client.cli import _exit_codes, cancel, jobs, pipelines, render, run, submit, watch
from videodag_client.cli._arguments import UsageError
from videodag_client.cli._connection import add_connection_arguments
from videodag_client.cli._proxy_answers import proxy_answer_exit_code, proxy_answer_hint, proxy_http_status
from videodag_client.cli._results import OutputNotWritten, is_stdout
from videodag_client.cli._terminal import terminal_safe

# Words gRPC puts in an UNAVAILABLE status when the connection failed in the TLS handshake; up
# to grpcio 1.76, a certificate for another name said only that the peer name is not in it.
# gRPC's words for a channel none of whose connections came up: its first-address policy's (the
# default), and its round-robin policy's (a channel made with it).
_CONNECT_FAILURE_MARKS = ("failed to connect", "connections to all backends failing")
_NAME_MISMATCH_MARKS = ("Hostname Verification Check failed", "is not in peer certificate")
# gRPC's own refusal of a message over the receiver's limit, with both sizes.
_MESSAGE_OVER_LIMIT = re.compile(r"Received message larger than max \((\d+) vs\. (\d+)\)")

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videodag",
        description="Run videodag pipelines on videos through a videodag server.",
        epilog=(
            "exit codes: 0 ok, 1 server error, a request refused in the state it found (FAILED_PRECONDITION: "
            "a finished job, a reused idempotency key) or output that could not be written, 2 usage, 3 not found, "
            "4 invalid argument, 5 resource exhausted (or a proxy's HTTP 413), 6 data loss, 7 unavailable or "
            "deadline exceeded, 8 unauthenticated, permission denied or TLS handshake failed, "
            "130 interrupted (SIGINT), 129 hung up (SIGHUP), 141 output closed by its reader, 143 terminated (SIGTERM)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('videodag')}")
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
    _write_what_the_encoding_cannot_as_escapes()
    closed = {number for number, stream in ((1, sys.stdout), (2, sys.stderr)) if stream is None}
    for number in sorted(closed):  # before gRPC opens any descriptor, which could take these numbers
        _hold_descriptor(number)
    if 2 in closed:  # `2>&-`: messages go nowhere, the exit code still tells
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  # the process's stderr until it exits
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as usage_exit:  # --help, or a usage error argparse already printed
        return usage_exit.code if isinstance(usage_exit.code, int) else _exit_codes.USAGE
    output = getattr(args, "output", None)
    if output is not None and _descriptor_named(output) in closed:
        # Held on /dev/null: results written there would vanish without a word.
        print(f"error: cannot write results to {output}: no such descriptor is open", file=sys.stderr)
        return _exit_codes.USAGE
    if sys.stdout is None:  # descriptor 1 closed: print() would drop results and job ids without a word
        if _writes_its_output_to_stdout(args):
            print("error: standard output is closed; point it somewhere (> /dev/null to discard it)", file=sys.stderr)
            return _exit_codes.USAGE
        with open(os.devnull, "w") as nowhere:  # only a summary would go there: nothing is lost
            sys.stdout = nowhere
            try:
                return _run_command(args)
            finally:
                sys.stdout = None  # as it was
    return _run_command(args)


def _write_what_the_encoding_cannot_as_escapes() -> None:
    """Under a locale that is not UTF-8 (Latin-1, EUC-JP, `PYTHONIOENCODING=ascii`), a job's CJK
    file name or a pipeline's "—" failed the whole listing with UnicodeEncodeError; a file name
    whose bytes are not UTF-8 failed the summary of a run that had succeeded. Such characters are
    written as Python escapes (`\\u884c`, `\\udce9`) instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def _descriptor_named(path: str) -> int | None:
    """The descriptor a path such as /dev/stdout or /dev/fd/2 opens, as Linux resolves it."""
    if match := re.fullmatch(r"/(?:dev|proc/self)/fd/(\d+)", path):
        return int(match.group(1))
    return {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}.get(path)


def _hold_descriptor(number: int) -> None:
    """Point a closed descriptor (1 or 2) at /dev/null. Left closed, it is the number the next
    file or socket opened gets, gRPC's poller's included, and the C library closes its stdout
    and stderr as the process exits: gRPC's poller then aborts the process (exit code -6).
    With stderr closed, print() to sys.stderr would even write to stdout. Opened, never
    duplicated onto the number, which would close whatever took it meanwhile."""
    lower: list[int] = []
    descriptor = os.open(os.devnull, os.O_WRONLY)
    while descriptor < number:  # descriptors below it that are closed too, held for the moment
        lower.append(descriptor)
        descriptor = os.open(os.devnull, os.O_WRONLY)
    if descriptor != number:  # taken meanwhile
        os.close(descriptor)
    for held in lower:
        os.close(held)


def _run_command(args: argparse.Namespace) -> int:
    try:
        with _termination_as_interrupt():
            exit_code: int = args.handler(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return _exit_codes.USAGE
    except OutputNotWritten as error:
        print(f"error: {error}", file=sys.stderr)
        _drop_what_stdout_could_not_write()
        return _exit_codes.OUTPUT_NOT_WRITTEN
    except VideodagError as error:
        if _is_tls_failure(error):
            _print_tls_failure(error)
            if _is_name_mismatch(error):
                print(f"  {_name_mismatch_hint(args)}", file=sys.stderr)
            return _exit_codes.CREDENTIALS
        _print_error(error)
        exit_code = _exit_codes.exit_code_for_status(error.code)
        if (http_status := proxy_http_status(error)) is not None:
            print(f"  {proxy_answer_hint(http_status)}", file=sys.stderr)
            return proxy_answer_exit_code(http_status, exit_code)
        if (hint := _closed_connection_hint(args, error) or _chunk_over_message_limit_hint(args, error)) is not None:
            print(f"  {hint}", file=sys.stderr)
        return exit_code
    except BrokenPipeError:
        # The reader of the output had enough (`videodag run -o - | head`): stop quietly, as a
        # process ended by SIGPIPE would, and point stdout at nothing so the flush at exit
        # does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _exit_codes.OUTPUT_CLOSED
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return _exit_codes.USAGE
    except _Terminated as ended:
        print(ended.said, file=sys.stderr)
        return ended.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return _exit_codes.INTERRUPTED
    return exit_code


def _drop_what_stdout_could_not_write() -> None:
    """A stdout that failed a write (a full disk) still holds what it could not write: the flush
    as the process exits would fail on it again, print a traceback and exit 120. It is pointed
    at nothing first, as after a broken pipe."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError:
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, sys.stdout.fileno())
        os.close(nowhere)


def _writes_its_output_to_stdout(args: argparse.Namespace) -> bool:
    """Whether what the command is for goes to stdout: a listing, a job id, results with `-o -`.
    `run`, `watch` and `render` writing to files print only a summary there."""
    return args.command not in ("run", "watch", "render") or is_stdout(getattr(args, "output", None))


# Windows has neither SIGHUP nor its "hung up": a console closing there is SIGBREAK, as Ctrl-Break is.
_SIGHUP: int | None = getattr(signal, "SIGHUP", None)
_SIGBREAK: int | None = getattr(signal, "SIGBREAK", None)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP (the terminal closed), raised where Ctrl-C would be, so that the same
    clean-up runs: the call is cancelled, partial results are kept as a `.part` file, and a
    render's partial video and temporary links are removed. On Windows, SIGBREAK too."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        hung_up = signal_number == _SIGHUP
        self.said = "hung up" if hung_up else "terminated"
        self.exit_code = _exit_codes.HUNG_UP if hung_up else _exit_codes.TERMINATED


def _raise_terminated(signal_number: int, _frame: FrameType | None) -> None:
    raise _Terminated(signal_number)


@contextmanager
def _termination_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (SIGBREAK on Windows) handled like SIGINT while a command runs (signals
    can be caught in the main thread only); a signal ignored already (`nohup`) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = [signal.SIGTERM] + [number for number in (_SIGHUP, _SIGBREAK)
                                 if number is not None and signal.getsignal(number) != signal.SIG_IGN]
    previous = {number: signal.signal(number, _raise_terminated) for number in caught}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _is_tls_failure(error: VideodagError) -> bool:
    return error.reason == TLS_HANDSHAKE_FAILED


def _closed_connection_hint(args: argparse.Namespace, error: VideodagError) -> str | None:
    """What a socket closed as the connection was made may mean: all gRPC says when a TLS
    server ends the handshake for want of a client certificate, or of one it trusts, or when
    a plaintext client reaches a TLS port. A server that closes connections for another reason
    reads the same, so it is a hint, not an exit code."""
    message = error.message.lower()
    if not (error.code is grpc.StatusCode.UNAVAILABLE and any(mark in message for mark in _CONNECT_FAILURE_MARKS)
            and "socket closed" in message):
        return None
    if not (getattr(args, "tls", False) or getattr(args, "tls_ca", None)):
        return "if the server serves TLS, pass --tls (or --tls-ca): a TLS server closes a plaintext connection this way"
    if not getattr(args, "tls_cert", None):
        return ("a TLS server that requires a client certificate closes the connection this way: pass --tls-cert "
                "and --tls-key")
    return ("a TLS server that does not trust the client certificate closes the connection this way: check that "
            "--tls-cert is signed by the CA the server trusts")


def _chunk_over_message_limit_hint(args: argparse.Namespace, error: VideodagError) -> str | None:
    """A server whose --max-message-bytes is below the upload's chunks: gRPC refuses the first
    chunk before the server sees it, and says only that a message was larger than its maximum."""
    match = _MESSAGE_OVER_LIMIT.search(error.message)
    if error.code is not grpc.StatusCode.RESOURCE_EXHAUSTED or error.reason or match is None \
            or getattr(args, "chunk_size", None) is None:
        return None
    limit = int(match.group(2))
    fits = max(1, (limit - 64) // 1024 * 1024 if limit > 2048 else limit - 64)
    return (f"the server takes messages of at most {limit} bytes, and this upload's chunks are {args.chunk_size}: "
            f"pass --chunk-size {fits} or less")


def _is_name_mismatch(error: VideodagError) -> bool:
    """The certificate is trusted but names another host: gRPC's words for it, in its releases'
    two checks (its own verifier's, and the older peer-name check)."""
    return any(mark in error.message for mark in _NAME_MISMATCH_MARKS)


def _name_mismatch_hint(args: argparse.Namespace) -> str:
    if getattr(args, "tls_server_name", None):
        return (f"the server's certificate does not hold the name {args.tls_server_name!r} given to "
                "--tls-server-name: give one it holds")
    return ("the server's certificate does not hold the host name or address of --server: reach it by a name it "
            "holds, or give that name to --tls-server-name (through a tunnel or a port-forward)")


def _print_tls_failure(error: VideodagError) -> None:
    """Not "unavailable, retry later": a handshake fails the same way every time until the setup changes."""
    print(
        "error: TLS handshake with the server failed: check --tls-ca (the CA that signed the server's "
        "certificate), --tls-cert/--tls-key if the server wants a client certificate, and that the server "
        f"serves TLS\n  gRPC: {terminal_safe(error.message, one_line=True)}",
        file=sys.stderr,
    )


def _print_error(error: VideodagError) -> None:
    lines = [f"error: {error.code.name}: {terminal_safe(error.message, one_line=True)}"]
    for violation in error.field_violations:
        line = terminal_safe(f"{violation.field}: {violation.description}", one_line=True)
        if line not in lines[0]:  # servers often spell a lone violation out in the message
            lines.append(f"  {line}")
    if error.retry_after is not None:
        lines.append(f"  retry after {error.retry_after:g} s")
    print("\n".join(lines), file=sys.stderr)
