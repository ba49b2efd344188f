"""Frame results arrive as plain JSON-like values, whole numbers as ints."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2

from videodag_client._events import struct_to_dict

RESULT: dict[str, Any] = {
    "tracks": [
        {"track_id": 3, "box": [1.5, 2.0, 30.25, -4.0], "score": 0.875, "label": "person", "lost": False},
        {"track_id": 4, "box": [], "score": 1, "label": "", "lost": True, "note": None},
    ],
    "stats": {"mean_brightness": 121.37, "width": 1280, "height": 720, "empty": {}},
    "count": 0,
    "largest_exact": 2**53 - 1,
    "past_exact": float(2**53),
    "negative": -7,
    "tiny": 1e-300,
}


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def test_a_result_comes_back_as_it_was_sent_with_whole_numbers_as_ints() -> None:
    converted = struct_to_dict(_struct(RESULT))
    assert converted == RESULT
    assert type(converted["tracks"][0]["track_id"]) is int
    assert type(converted["tracks"][1]["score"]) is int  # 1.0 on the wire: whole, so an int
    assert type(converted["tracks"][0]["score"]) is float
    assert type(converted["past_exact"]) is float  # beyond 2**53 a double is no longer an exact id
    assert converted["tracks"][1]["note"] is None and converted["tracks"][1]["lost"] is True


def test_it_agrees_with_protobufs_own_conversion() -> None:
    struct = _struct(RESULT)
    by_protobuf = json_format.MessageToDict(struct)
    assert struct_to_dict(struct) == by_protobuf  # ints compare equal to the floats protobuf gives


def test_numbers_json_cannot_carry_stay_numbers() -> None:
    converted = struct_to_dict(_struct({"nan": math.nan, "inf": math.inf}))
    assert math.isnan(converted["nan"]) and converted["inf"] == math.inf


def _keys_at_every_level(value: Any) -> list[list[str]]:
    if isinstance(value, dict):
        return [list(value), *(keys for item in value.values() for keys in _keys_at_every_level(item))]
    if isinstance(value, list):
        return [keys for item in value for keys in _keys_at_every_level(item)]
    return []


def test_keys_come_sorted_at_every_level_whatever_order_the_map_arrived_in() -> None:
    """A Struct's map order is not defined on the wire: the same result must read the same every run."""
    struct = _struct({"zeta": {"b": 1, "a": [{"y": 1, "x": 2}]}, "alpha": 2, "mid": "m"})
    received = struct_pb2.Struct.FromString(struct.SerializeToString())
    converted = struct_to_dict(received)
    levels = _keys_at_every_level(converted)
    assert levels == [["alpha", "mid", "zeta"], ["a", "b"], ["x", "y"]]
