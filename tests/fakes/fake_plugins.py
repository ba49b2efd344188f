"""Small plugins for engine tests: they record what the engine does to them."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videodag_service.dag import Param, Plugin, PluginRegistry, Port, Tool, function_tool


@dataclass
class Recorder:
    """Shared log of opens, calls and closes, safe across threads."""

    events: list[tuple[str, ...]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *event: str) -> None:
        with self.lock:
            self.events.append(event)

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for event in self.events if event[0] == kind)


class _Counter:
    """Stateful tool: counts the frames of its own run and fails where told."""

    def __init__(self, params: Mapping[str, Any], recorder: Recorder) -> None:
        self._params = params
        self._recorder = recorder
        self._seen = 0
        recorder.add("open", "counter")

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        self._seen += 1
        index = inputs["index"]
        self._recorder.add("frame", str(index))
        if index in self._params["fail_on"]:
            raise RuntimeError(f"boom on {index}")
        if self._params["delay_seconds"]:
            time.sleep(self._params["delay_seconds"])
        return {"count": self._seen, "index": index}

    def close(self) -> None:
        self._recorder.add("close", "counter")


def _add(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"sum": inputs["left"] + inputs["right"] + params["offset"]}


def _bad_output(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"value": object()} if params["broken"] else {"value": 1}


def _size(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"length": len(inputs["data"])}


def make_test_plugin(recorder: Recorder) -> Plugin:
    """A plugin named `test` with a stateful counter and a few stateless tools."""
    return Plugin(
        name="test",
        description="Tools for engine tests.",
        tools=(
            Tool(
                name="counter",
                description="Counts frames of one run.",
                inputs=(Port("index"),),
                outputs=(Port("count"), Port("index")),
                params=(
                    Param("fail_on", list, [], "frame indexes to fail on"),
                    Param("delay_seconds", float, 0.0, "sleep per frame"),
                ),
                open=lambda params: _Counter(params, recorder),
                stateful=True,
            ),
            function_tool(
                "add", _add,
                description="left + right + offset",
                inputs=(Port("left"), Port("right")),
                outputs=(Port("sum"),),
                params=(Param("offset", int, 0), Param("mode", str, "plain", choices=("plain", "fancy"))),
            ),
            function_tool(
                "bad_output", _bad_output,
                description="Returns a value that is not JSON-like when broken.",
                inputs=(Port("index"),),
                outputs=(Port("value"),),
                params=(Param("broken", bool, True),),
            ),
            function_tool(
                "size", _size,
                description="Length of the encoded frame.",
                inputs=(Port("data"),),
                outputs=(Port("length"),),
            ),
            function_tool(
                "needs", lambda inputs, params: {"out": params["required_value"]},
                description="Has a required parameter.",
                inputs=(),
                outputs=(Port("out"),),
                params=(Param("required_value", int),),
            ),
        ),
    )


def make_registry(recorder: Recorder | None = None) -> PluginRegistry:
    return PluginRegistry([make_test_plugin(recorder or Recorder())])
