"""Whole numbers as operators write them in flags and variables, "1e9" as well as "1000000000".

Apart from `server_arguments` because the container's health probe reads `VIDEODAG_PORT` as the
server does: a port the server took, the probe must find.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Written with an exponent, a whole number has at most this many digits: a size or a count has
# far fewer, and 1e999999999 would otherwise take minutes to turn into an int, 1e4299 a refusal
# 4 KB long to print.
MOST_EXPONENT_DIGITS = 19


class TooManyDigits(ValueError):
    """A whole number in exponent form past `MOST_EXPONENT_DIGITS`."""


def whole_number(raw: str) -> int:
    """The integer `raw` writes: as int() reads it, or in exponent form (an operator sets a size
    of 1e9 or 5e8 bytes as readily as 1000000000). Decimal, not float, so every digit is kept and
    1.5e3 is whole while 1.0005e3 is not. ValueError for anything else."""
    try:
        return int(raw)
    except ValueError:
        try:
            number = Decimal(raw.strip())
        except InvalidOperation:
            raise ValueError(raw) from None
        if not number.is_finite():
            raise ValueError(raw) from None
        if number.is_zero():
            return 0
        if number.adjusted() >= MOST_EXPONENT_DIGITS:
            raise TooManyDigits(raw) from None
        if number != number.to_integral_value():
            raise ValueError(raw) from None
        return int(number)
