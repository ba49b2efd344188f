"""Drawing one frame's result: boxes, each captioned with what its object says of itself.

Any object with a `"box": [x1, y1, x2, y2]` anywhere in a frame's result is drawn, labelled with
its `label`, `track_id`, `score` and `text` when present: the renderer knows no pipeline.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

BoxColour = tuple[int, int, int]  # OpenCV's BGR order

# Distinct, saturated colours that stay readable on street footage (BGR).
PALETTE: tuple[BoxColour, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# OpenCV's Hershey fonts have ASCII glyphs only; other characters are drawn as "?".
_DRAWABLE = {chr(code) for code in range(32, 127)}


@dataclass(frozen=True)
class Annotation:
    """One object with a box found in a result."""

    output: str
    box: tuple[float, float, float, float]
    caption: str
    colour: BoxColour


def find_annotations(result: Mapping[str, Any]) -> list[Annotation]:
    """Every object with a valid box in a frame's result, wherever it is nested."""
    found: list[Annotation] = []
    for output, value in result.items():
        for item in _objects_with_box(value):
            box = _box(item["box"])
            if box is not None:
                track_id = _whole(item.get("track_id"))
                found.append(Annotation(output, box, _caption(item, track_id), _colour(output, track_id)))
    return found


def _objects_with_box(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        if "box" in value:
            yield value
        else:
            for nested in value.values():
                yield from _objects_with_box(nested)
    elif isinstance(value, list):
        for nested in value:
            yield from _objects_with_box(nested)


def _box(raw: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        return None
    x1, y1, x2, y2 = (float(v) for v in raw)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _whole(value: Any) -> Any:
    """Struct numbers are doubles on the wire: track id 3 arrives as 3.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _caption(item: Mapping[str, Any], track_id: Any) -> str:
    parts = []
    if track_id is not None:
        parts.append(f"#{track_id}")
    if item.get("label") not in (None, ""):
        parts.append(str(item["label"]))
    if isinstance(item.get("score"), int | float):
        parts.append(f"{item['score']:.2f}")
    if item.get("text") not in (None, ""):
        parts.append(f'"{item["text"]}"')
    return _drawable(" ".join(parts))


def _drawable(text: str) -> str:
    return "".join(c if c in _DRAWABLE else "?" for c in text)


def _colour(output: str, track_id: Any) -> BoxColour:
    """A track keeps its colour in every frame; untracked objects take their output's colour."""
    key = f"track:{track_id}" if track_id is not None else f"output:{output}"
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def draw_result(frame: np.ndarray, result: Mapping[str, Any]) -> int:
    """Draw a result's boxes and captions onto `frame` in place; returns how many boxes were drawn."""
    height, width = frame.shape[:2]
    thickness = max(1, round(min(width, height) / 300))
    scale = max(0.4, min(width, height) / 1000)
    found = find_annotations(result)
    # OpenCV takes points as 32-bit ints: a box far off the frame is drawn clipped to this margin.
    reach = 4 * max(width, height)
    for item in found:
        x1, y1, x2, y2 = (min(max(round(v), -reach), reach) for v in item.box)
        cv2.rectangle(frame, (x1, y1), (x2, y2), item.colour, thickness, cv2.LINE_AA)
        if item.caption:
            draw_label(frame, item.caption, (x1, y1), item.colour, scale)
    return len(found)


def draw_label(frame: np.ndarray, text: str, corner: tuple[int, int], colour: BoxColour, scale: float) -> None:
    """Caption on a filled tab above the box's top-left corner (inside the box at the top edge)."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = corner
    top = y - text_height - baseline - 2 if y - text_height - baseline - 2 >= 0 else y
    cv2.rectangle(frame, (x, top), (x + text_width + 4, top + text_height + baseline + 2), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
    cv2.putText(frame, text, (x + 2, top + text_height + 1), FONT, scale, ink, 1, cv2.LINE_AA)
