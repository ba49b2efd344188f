"""Numbers as the server's messages say them: "1 video", "4 videos".

Apart from the error tree because refusals of every kind (runs, watches, uploads, health
watches, reflection streams) word their caps with it.
"""

from __future__ import annotations


def counted(number: int, one: str, many: str) -> str:
    """"1 video", "4 videos": a limit of 1 is a setting people use."""
    return f"{number} {one if number == 1 else many}"
