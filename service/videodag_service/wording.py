"""Numbers as the server's messages say them: "1 video", "4 videos", "11.999999 s".

Apart from the error tree because refusals of every kind (runs, watches, uploads, health
watches, reflection streams, time limits) word their caps with it.
"""

from __future__ import annotations

from decimal import Decimal


def counted(number: int, one: str, many: str) -> str:
    """"1 video", "4 videos": a limit of 1 is a setting people use."""
    return f"{number} {one if number == 1 else many}"


def plain_number(value: float) -> str:
    """A setting's value as its operator wrote it and a client parses it back: whole numbers as
    integers, others with every digit they have, never in exponent form. `:g` keeps six digits,
    so a limit of 11.999999 s read "12" and 1234567 bytes a second "1.23457e+06"."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")
