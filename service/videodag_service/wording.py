"""Numbers as the server's messages say them: "1 video", "4 videos", "11.999999 s".

Apart from the error tree because refusals of every kind (runs, watches, uploads, health
watches, reflection streams, time limits) word their caps with it.
"""

from __future__ import annotations

import unicodedata
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


def first_fault(text: str, allowed: frozenset[str], most: int, least: int = 1) -> str:
    """What is wrong with a client's text, as "got 130 characters" or "got ' ' as character 5":
    a refusal that only restates the rule leaves someone comparing a 128-character key by eye.
    The text itself is not repeated: it may be long, and every log line would carry it."""
    if not least <= len(text) <= most:
        return f"got {counted(len(text), 'character', 'characters')}"
    for position, character in enumerate(text, start=1):
        if character not in allowed:
            return f"got {shown_character(character)} as character {position}"
    return "got a value of that form"


def shown_character(character: str) -> str:
    """A character as a refusal names it: "' '", or with its code point where it could pass for
    another or not show at all ("'K' (U+212A)", a Kelvin sign; "U+0301", a combining accent)."""
    if character.isascii() and character.isprintable() and character != "'":
        return f"'{character}'"
    code_point = f"U+{ord(character):04X}"
    visible = character.isprintable() and not character.isspace() and not unicodedata.combining(character)
    return f"'{character}' ({code_point})" if visible and character != "'" else code_point
