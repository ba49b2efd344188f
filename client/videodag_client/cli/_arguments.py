"""Argument types that refuse what the server's fields cannot carry, and the CLI's usage error.

A number that does not fit its protobuf field (an int32 stride, an int64 frame index, a
Duration) would otherwise fail deep inside protobuf or gRPC with a traceback; checked here,
it is a usage error (exit 2) naming the option, before anything is sent.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from videodag_client._target import checked_target

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# google.protobuf.Duration's own range: about 10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000
# gRPC turns a deadline much further away than this into an immediate DEADLINE_EXCEEDED.
MAX_TIMEOUT_SECONDS = 1_000_000_000


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
    """An argparse type for --server: HOST:PORT with a port in 1..65535, or a gRPC target URI,
    checked as `VideodagClient` checks its target (`videodag_client._target`)."""
    utf8_text(text)
    try:
        return checked_target(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None
