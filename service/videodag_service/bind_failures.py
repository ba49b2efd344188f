"""Why the server's port could not be bound, in the operating system's words.

gRPC reports a failed bind as no more than "Failed to bind to address"; its reason (a port
in use, a port below 1024 without the capability, a host name that does not resolve, an
address of another machine) goes to its own log line, which is not JSON even with
`--log-format json`. Binding the same address with a plain socket gets the reason.
"""

from __future__ import annotations

import errno
import socket

_UNKNOWN_REASON = "the port is in use, or the host is not an address of this machine"


def bind_refusal(host: str, port: int, *, sure_only: bool = False) -> str | None:
    """Why no address `host` resolves to can be bound at `port` now, in the operating system's
    words; None when one can (gRPC listens if any of them binds). Asked before gRPC binds
    (`sure_only`), it keeps gRPC's own line (`E... add_port.cc ... Address already in use`),
    which is not JSON, out of the log for the usual failures, and leaves any other to gRPC,
    which may do what a plain socket cannot (`::` on a kernel without IPv6: it listens on
    0.0.0.0)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"the host name does not resolve ({error.strerror})"
    reasons = []
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a TIME_WAIT is no conflict
                probe.bind(address)
        except OSError as error:
            if sure_only and error.errno not in _EXPLANATIONS:
                return None
            reasons.append(_in_words(error))
        else:
            return None
    return reasons[0] if reasons else None


def bind_failure_reason(host: str, port: int) -> str:
    """The error a bind of `host`:`port` gets now, after gRPC's failed; a guess at the usual
    causes when a bind succeeds this time (the port was freed meanwhile)."""
    return bind_refusal(host, port) or _UNKNOWN_REASON


_EXPLANATIONS = {
    errno.EACCES: "a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability",
    errno.EADDRINUSE: "another process listens on the port",
    errno.EADDRNOTAVAIL: "the host is not an address of this machine",
}


def _in_words(error: OSError) -> str:
    reason = error.strerror or str(error)
    explanation = _EXPLANATIONS.get(error.errno or 0)
    return f"{reason} ({explanation})" if explanation else reason
