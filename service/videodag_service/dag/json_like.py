"""Frame results and pipeline parameters are JSON-like: what a node output must become before it
leaves the run, and what a parameter value must already be to be shown to clients."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

# How deep lists and mappings may nest in a node output or a parameter value. A result or a
# parameter reaches clients inside a protobuf Struct, and protobuf's parsers (Python's, C++'s,
# Java's) refuse a message nested more than 100 levels deep, counting the message around it:
# an output of 33 nested mappings already cannot be read. Nothing real comes near this.
MAX_NESTING = 20
# How many values (numbers, strings, lists, ...) a parameter may hold in all: every client listing
# the pipelines receives them, and through YAML aliases a file of a few hundred bytes can hold
# billions.
MAX_PARAMETER_VALUES = 100_000


class NotJsonLike(TypeError):
    """Raised when a value cannot be part of a frame result."""


def _number_problem(value: int) -> str | None:
    """Every number of a Struct is a double: an int beyond its range cannot be sent at all."""
    try:
        float(value)
    except OverflowError:
        digits = len(str(abs(value))) if abs(value).bit_length() < 10_000 else "too many"
        return f"an integer of {digits} digits, too large for a number (a double)"
    return None


def to_json_like(value: Any) -> Any:
    """Convert a node output into JSON-like values (dicts, lists, str, finite numbers, bool, None),
    nested at most `MAX_NESTING` deep.

    Values with a `to_json()` method (such as `Detections`) convert themselves; numpy
    scalars and arrays become Python numbers and lists.
    """
    return _Conversion().convert(value, 0)


def to_json_like_sized(value: Any) -> tuple[Any, int]:
    """`to_json_like(value)`, and at least the bytes it takes as one entry of a result (a
    protobuf Struct), counted as it is converted: a bound that costs an addition a value, where
    measuring the Struct (`encoded_size`) would build it a second time."""
    conversion = _Conversion()
    converted = conversion.convert(value, 0)
    return converted, conversion.bytes_bound


# Bytes a value takes in a Struct beyond its text, at most: its field's tag and length (1 + 5),
# and inside it the Value's own (1 + 5). A number takes 9 in its Value, true/false/null 2.
_ENVELOPE = 12
_NUMBER = 2 + 9
_CONSTANT = 2 + 2
# Ints this size convert to a double without a doubt, so they skip the range check.
_EXACT_INT = 2**53


class _Conversion:
    """One conversion, adding up an upper bound of the encoded size as it goes."""

    def __init__(self) -> None:
        self.bytes_bound = 0

    def convert(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is float:  # the most common value first: plain floats and ints
            if not math.isfinite(value):
                raise NotJsonLike(f"non-finite number {value!r}")
            self.bytes_bound += _NUMBER
            return value
        if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
            self.bytes_bound += _NUMBER
            return value
        if value is None or isinstance(value, bool):
            self.bytes_bound += _CONSTANT
            return value
        if isinstance(value, str):
            self.bytes_bound += _ENVELOPE + _utf8_length(value)
            return value
        if isinstance(value, int):
            if (problem := _number_problem(value)) is not None:
                raise NotJsonLike(problem)
            self.bytes_bound += _NUMBER
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise NotJsonLike(f"non-finite number {value!r}")
            self.bytes_bound += _NUMBER
            return value
        if isinstance(value, np.generic):
            return self.convert(value.item(), depth)
        to_json = getattr(value, "to_json", None)
        if callable(to_json) and not isinstance(value, np.ndarray):
            return self.convert(to_json(), depth)
        if not isinstance(value, Mapping | list | tuple | np.ndarray):
            raise NotJsonLike(f"value of type {type(value).__name__}")
        if isinstance(value, np.ndarray) and value.ndim == 0:
            return self.convert(value.item(), depth)
        if depth == MAX_NESTING:
            raise NotJsonLike(f"lists and mappings nested more than {MAX_NESTING} deep (or holding themselves)")
        if isinstance(value, np.ndarray):
            if value.ndim > MAX_NESTING - depth:
                raise NotJsonLike(f"an array of {value.ndim} dimensions nested {depth} deep: over {MAX_NESTING} in all")
            return self.convert(value.tolist(), depth)
        self.bytes_bound += _ENVELOPE
        if isinstance(value, Mapping):
            converted: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise NotJsonLike(f"mapping key {key!r} is not a string")
                self.bytes_bound += _ENVELOPE + (len(key) if key.isascii() else _utf8_length(key))
                converted[key] = self.convert(item, depth + 1)
            return converted
        return [self.convert(item, depth + 1) for item in value]


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, as surrogateescape leaves for undecodable bytes
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise NotJsonLike(f"a string that is not valid Unicode (a lone surrogate): {shown!r}") from None


def entry_bound(name: str, value_bound: int) -> int:
    """At most the bytes a result's entry `name` takes, its value taking `value_bound`."""
    return _ENVELOPE + _utf8_length(name) + value_bound


def encoded_size(result: Mapping[str, Any]) -> int:
    """Bytes a JSON-like frame result takes as it goes out: as a protobuf Struct, whose size is
    what every client's and server's message limit counts."""
    message = struct_pb2.Struct()
    message.update(result)
    return message.ByteSize()


def json_like_problem(value: Any) -> str | None:
    """What in `value` is not plain JSON-like data, or None when all of it is.

    Stricter than `to_json_like`, which converts: a parameter value is shown to clients as
    written (a protobuf Struct), so only str, int in a double's range, finite float, bool,
    None, list and dict with str keys may appear, nested at most `MAX_NESTING` deep and at
    most `MAX_PARAMETER_VALUES` of them. YAML gives
    more (dates, bytes, sets, and through anchors a list that holds itself), and those would
    only fail later, when a client lists the pipelines. The answer names where the value sits
    inside `value`, as `[0]['key']`.
    """
    return _JsonLikeCheck().problem(value, "", 0)


class _JsonLikeCheck:
    """One walk of a value, counting its values as a client receives them: with every YAML alias
    expanded. A list or mapping met again through an alias, no deeper than where it was found
    fine, is counted, not walked again: aliases of aliases repeat a few bytes of a file
    exponentially many times."""

    def __init__(self) -> None:
        self._fine: dict[int, tuple[int, int]] = {}  # id -> (depth found fine at, values inside)
        self._enclosing: set[int] = set()
        self.values = 0

    def problem(self, value: Any, where: str, depth: int) -> str | None:
        self.values += 1
        if self.values > MAX_PARAMETER_VALUES:
            return _too_many_values(where)
        if value is None or isinstance(value, bool | str):
            return None
        if isinstance(value, int):
            problem = _number_problem(value)
            return None if problem is None else f"{where or 'the value'} is {problem}"
        if isinstance(value, float):
            return None if math.isfinite(value) else f"{where or 'the value'} is the non-finite number {value!r}"
        if isinstance(value, list | dict):
            return self._container_problem(value, where, depth)
        shown = str(value)
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        return f"{where or 'the value'} is {type(value).__name__} {shown}"

    def _container_problem(self, value: list[Any] | dict[Any, Any], where: str, depth: int) -> str | None:
        if id(value) in self._enclosing:
            return f"{where or 'the value'} holds itself (a YAML alias of an enclosing anchor)"
        fine_at, inside = self._fine.get(id(value), (-1, 0))
        if fine_at >= depth:
            self.values += inside
            return None if self.values <= MAX_PARAMETER_VALUES else _too_many_values(where)
        if depth == MAX_NESTING:
            return f"{where or 'the value'} nests lists and mappings more than {MAX_NESTING} deep"
        self._enclosing.add(id(value))
        before = self.values
        try:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict) and not isinstance(key, str):
                    return f"{where or 'the mapping'} has the {type(key).__name__} key {key!r}, not a string"
                if (problem := self.problem(item, f"{where}[{key!r}]", depth + 1)) is not None:
                    return problem
        finally:
            self._enclosing.discard(id(value))
        self._fine[id(value)] = (depth, self.values - before)
        return None


def _too_many_values(where: str) -> str:
    where = where or "the value"
    return f"{where} takes it over {MAX_PARAMETER_VALUES} values (YAML aliases expanded, as clients see it)"
