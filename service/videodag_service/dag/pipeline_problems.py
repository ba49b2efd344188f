"""The problems found in one pipeline file, each told with the file and, when known, the node.

Apart from the loader because each part of the check adds to them: the strict YAML reading,
the document's own checks and the wiring's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Problems:
    """Collects problems for one file, each prefixed with the file and, when known, the node."""

    path: Path
    found: list[str] = field(default_factory=list)

    def add(self, problem: str, node: str | None = None) -> None:
        where = f"{self.path}: node {node!r}: " if node else f"{self.path}: "
        self.found.append(where + problem)
