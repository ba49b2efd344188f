"""Frame results and pipeline parameters are JSON-like: what a node output must become before it
leaves the run, and what a parameter value must already be to be shown to clients."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class NotJsonLike(TypeError):
    """Raised when a value cannot be part of a frame result."""


def to_json_like(value: Any) -> Any:
    """Convert a node output into JSON-like values (dicts, lists, str, finite numbers, bool, None).

    Values with a `to_json()` method (such as `Detections`) convert themselves; numpy
    scalars and arrays become Python numbers and lists.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonLike(f"non-finite number {value!r}")
        return value
    if isinstance(value, np.generic):
        return to_json_like(value.item())
    if isinstance(value, np.ndarray):
        return to_json_like(value.tolist())
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json_like(to_json())
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJsonLike(f"mapping key {key!r} is not a string")
            converted[key] = to_json_like(item)
        return converted
    if isinstance(value, list | tuple):
        return [to_json_like(item) for item in value]
    raise NotJsonLike(f"value of type {type(value).__name__}")


def json_like_problem(value: Any, where: str = "", enclosing: frozenset[int] = frozenset()) -> str | None:
    """What in `value` is not plain JSON-like data, or None when all of it is.

    Stricter than `to_json_like`, which converts: a parameter value is shown to clients as
    written (a protobuf Struct), so only str, int, finite float, bool, None, list and dict
    with str keys may appear, at any depth. YAML gives more (dates, bytes, sets, and through
    anchors a list that holds itself), and those would only fail later, when a client lists
    the pipelines. The answer names where the value sits inside `value`, as `[0]['key']`.
    """
    if value is None or isinstance(value, bool | str | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where or 'the value'} is the non-finite number {value!r}"
    if isinstance(value, list | dict):
        if id(value) in enclosing:
            return f"{where or 'the value'} holds itself (a YAML alias of an enclosing anchor)"
        inside = enclosing | {id(value)}
        if isinstance(value, dict):
            return _mapping_problem(value, where, inside)
        return next(
            (problem for index, item in enumerate(value)
             if (problem := json_like_problem(item, f"{where}[{index}]", inside))),
            None,
        )
    shown = str(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return f"{where or 'the value'} is {type(value).__name__} {shown}"


def _mapping_problem(value: dict[Any, Any], where: str, enclosing: frozenset[int]) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return f"{where or 'the mapping'} has the {type(key).__name__} key {key!r}, not a string"
        problem = json_like_problem(item, f"{where}[{key!r}]", enclosing)
        if problem:
            return problem
    return None
