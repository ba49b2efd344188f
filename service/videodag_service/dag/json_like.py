"""Frame results are JSON-like: what a node output must become before it leaves the run."""

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
