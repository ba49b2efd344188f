"""Argument types that refuse what the server's fields cannot carry, and the CLI's usage error.

A number that does not fit its protobuf field (an int32 stride, an int64 frame index, a
Duration) would otherwise fail deep inside protobuf or gRPC with a traceback; checked here,
it is a usage error (exit 2) naming the option, before anything is sent.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# google.protobuf.Duration's own range: about 10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000
# gRPC turns a deadline much further away than this into an immediate DEADLINE_EXCEEDED.
MAX_TIMEOUT_SECONDS = 1_000_000_000

# Target schemes gRPC resolves itself: their address is passed on as given.
_PASS_THROUGH_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:")
_DNS_PREFIX = re.compile(r"^dns:(//[^/]*/)?")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class UsageError(Exception):
    """A problem with the command line or its files, found before anything is sent (exit 2)."""


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer in [low, high], such as a field's int32 range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    return parse


def float_in_range(low: float, high: float, *, low_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type for a finite number in [low, high] (or (low, high]); nan and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        above_low = value >= low if low_inclusive else value > low
        if not math.isfinite(value) or not above_low or value > high:
            bound = "from" if low_inclusive else "greater than"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound} {low:g} up to {high:g}, got {text}")
        return value

    return parse


def utf8_text(text: str) -> str:
    """An argparse type for text sent to the server (a pipeline or job id, a key, an address).

    Bytes that are not UTF-8 on the command line (a name typed in Latin-1) reach Python as lone
    surrogates, which protobuf and gRPC cannot encode: they would fail deep in the call with a
    traceback. The message shows the bytes as given.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not valid UTF-8: {os.fsencode(text)!r}") from None
    return text


def server_address(text: str) -> str:
    """An argparse type for --server: HOST:PORT with a port in 1..65535, or a gRPC target URI.

    A port is required: gRPC would otherwise dial 443, which is never a videodag server's
    default. `dns:///HOST:PORT` is checked the same way; `unix:PATH` and the other
    address schemes gRPC knows are passed on unchecked.
    """
    utf8_text(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; give HOST:PORT, such as localhost:50051")
    if text.startswith(_PASS_THROUGH_SCHEMES):
        return text
    address = _DNS_PREFIX.sub("", text, count=1)
    scheme = _URL_SCHEME.match(address)
    if scheme:
        raise argparse.ArgumentTypeError(
            f"give HOST:PORT, not a {scheme.group(1)}:// URL (gRPC is not HTTP): {text!r}"
        )
    host, port = _split_host_port(address, text)
    if not host:
        raise argparse.ArgumentTypeError(f"no host before the port: {text!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"the port must be a number from 1 to 65535, got {port!r} in {text!r}")
    return text


def _split_host_port(address: str, original: str) -> tuple[str, str]:
    if address.startswith("["):  # [IPv6]:PORT
        host, _, rest = address[1:].partition("]")
        if not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"needs a port: [ADDRESS]:PORT, got {original!r}")
        return host, rest[1:]
    if address.count(":") > 1:
        raise argparse.ArgumentTypeError(f"put an IPv6 address in brackets, as [::1]:50051, got {original!r}")
    host, colon, port = address.rpartition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"needs a port: HOST:PORT, such as {address}:50051, got {original!r}")
    return host, port
