"""Tool inputs and outputs (`Port`), and the kinds of value that may flow between them.

Apart from the plugin interface (`plugin`) because the loader checks a pipeline's wiring against
the kinds (`wiring`) without needing anything else a tool declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def check_name(name: Any, what: str) -> None:
    """Refuse a plugin, tool or port name no pipeline file could write; `what` says which it is."""
    # Pipeline files name tools as `plugin.tool` and outputs as `node.output`: a name with a dot,
    # or an empty one, could never be written there.
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{what} name {name!r} must be a non-empty string without '.' (pipeline files "
                         "write plugin.tool and node.output)")


# What a port's value is, each with the words a pipeline's author is shown. Kinds let the loader
# refuse a wiring that would fail on every frame (a frame index fed to an image input) as the
# server starts; a port without a kind (None) is not checked, so plugins that declare none still load.
PORT_KINDS: Mapping[str, str] = {
    "image": "BGR uint8 array",
    "jpeg": "JPEG-encoded bytes",
    "int": "an integer",
    "float": "a number",
    "detections": "Detections: boxes, scores, labels",
    "json": "a JSON-like value",
}
# Beyond equal kinds, the only values that may flow from one kind to another: an int is a number
# wherever a float is taken, and every JSON-like value is what a "json" input takes.
_ALSO_FEEDS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"float", "json"}),
    "float": frozenset({"json"}),
}


def kinds_compatible(given: str | None, taken: str | None) -> bool:
    """Whether an output of kind `given` may feed an input of kind `taken`; None on either side is unchecked."""
    if given is None or taken is None or given == taken:
        return True
    return taken in _ALSO_FEEDS.get(given, frozenset())


def describe_kind(kind: str) -> str:
    """A kind as messages and the plugin reference show it: `image (BGR uint8 array)`."""
    return f"{kind} ({PORT_KINDS[kind]})"


@dataclass(frozen=True)
class Port:
    """A named input or output of a tool, with a word on the value it carries.

    `kind`, when given, is one of PORT_KINDS: "image" (a BGR uint8 array, height x width x 3),
    "jpeg" (JPEG-encoded bytes), "int", "float", "detections" (a `Detections`) or "json" (a
    JSON-like value: numbers, text, lists, mappings). The loader refuses a pipeline that wires
    an input to a source of another kind. Equal kinds match, an "int" may feed a "float" input,
    "int" and "float" may feed a "json" input, and a port without a kind (None) matches
    anything either way, so a tool that declares none is wired unchecked.
    """

    name: str
    description: str = ""
    kind: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "port")
        # Refused at declaration, so a misspelt kind fails the plugin's import, not silently every check.
        if self.kind is not None and self.kind not in PORT_KINDS:
            raise ValueError(
                f"port {self.name!r} declares unknown kind {self.kind!r} (kinds: {', '.join(PORT_KINDS)})"
            )
