"""Text from a server (or from another caller, through it) made safe to print on a terminal.

File names, pipeline ids and descriptions, error messages and job ids come from whoever
submitted or serves them. Printed raw, an escape sequence in one can retitle or clear the
user's terminal, recolour what follows or hide a line; a newline or carriage return can forge
one. Control characters are shown escaped instead, as Python writes them (`\\x1b`, `\\r`).
JSON output is left alone: its encoder escapes them already.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL and the C1 controls (0x9b starts a sequence as ESC [ does).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """`text` with its control characters escaped; `one_line` escapes newlines too, for text
    that must not be able to add a line (an error message after "error: ")."""
    pattern = _CONTROLS_AND_NEWLINE if one_line else _CONTROLS
    return pattern.sub(lambda found: repr(found.group())[1:-1], text)
