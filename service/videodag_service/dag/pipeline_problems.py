"""The problems found in one pipeline file, each told with the file and, when known, the node.

Apart from the loader because each part of the check adds to them: the strict YAML reading,
the document's own checks and the wiring's.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 2, 5, 5, 4, 5
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 80, 40, 80


def shown(value: Any) -> str:
    """A value of the file's as a problem shows it: Python's repr of it, cut short.

    The whole repr would print what the author gave in full: a line of megabytes for a long
    text, and for a few nested YAML aliases (`&a [x, x]`, `&b [*a, *a]`, ...) a billion
    values from a 600-byte file, gigabytes of memory before the server said anything.
    """
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int of more digits than Python writes out (YAML's 0x and 4000 f's)
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else "a value that cannot be shown"


@dataclass
class Problems:
    """Collects problems for one file, each prefixed with the file and, when known, the node."""

    path: Path
    found: list[str] = field(default_factory=list)

    def add(self, problem: str, node: str | None = None) -> None:
        where = f"{self.path}: node {node!r}: " if node else f"{self.path}: "
        self.found.append(where + problem)
