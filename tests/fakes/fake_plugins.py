"""Small plugins for engine tests: they record what the engine does to them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videodag_service.dag import (
    DagPipelineService,
    Param,
    Plugin,
    PluginRegistry,
    Port,
    Tool,
    builtin_plugins,
    function_tool,
    load_pipeline_folder,
    resolve_params,
)


@dataclass
class Recorder:
    """Shared log of opens, calls and closes, safe across threads."""

    events: list[tuple[str, ...]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    """Set it to let `test.hang` calls that are stuck return."""
    most_inside: int = 0
    """The most `test.overlap` calls that ran at the same time."""
    inside: int = 0
    entered: int = 0
    inside_changed: threading.Condition = field(default_factory=threading.Condition)
    hang_params: list[Mapping[str, Any]] = field(default_factory=list)
    """The params each `test.hang` instance was opened with."""

    def add(self, *event: str) -> None:
        with self.lock:
            self.events.append(event)

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for event in self.events if event[0] == kind)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() failed")


# What a counter raises where it fails: SystemExit as a library's sys.exit() does.
_RAISED: dict[str, type[BaseException]] = {
    "RuntimeError": RuntimeError, "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
    "CancelledError": asyncio.CancelledError, "Unprintable": _Unprintable,
}


class _Counter:
    """Stateful tool: counts the frames of its own run and fails where told."""

    def __init__(self, params: Mapping[str, Any], recorder: Recorder) -> None:
        self._params = params
        self._recorder = recorder
        self._seen = 0
        time.sleep(params["open_seconds"])
        if params["fail_opening"]:
            raise _RAISED[params["raising"]]("boom opening")
        recorder.add("open", "counter")

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        self._seen += 1
        index = inputs["index"]
        self._recorder.add("frame", str(index))
        if index in self._params["fail_on"]:
            raise _RAISED[self._params["raising"]](f"boom on {index}")
        if self._params["delay_seconds"]:
            time.sleep(self._params["delay_seconds"])
        return {"count": self._seen, "index": index}

    def close(self) -> None:
        self._recorder.add("close", "counter")


class _Hang:
    """Hangs on the frames it is told to, like a plugin stuck in native code, until released."""

    def __init__(self, params: Mapping[str, Any], recorder: Recorder) -> None:
        self._params = params
        self._recorder = recorder
        recorder.hang_params.append(params)
        recorder.add("open", "hang")

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        index = inputs["index"]
        if index in self._params["hang_on"]:
            self._recorder.add("hang", str(index))
            self._recorder.release.wait(self._params["hang_seconds"])
            self._recorder.add("hang_returned", str(index))
        return {"index": index}

    def close(self) -> None:
        if self._params["hang_in_close"]:
            self._recorder.add("hang", "close")
            self._recorder.release.wait(self._params["hang_seconds"])
        self._recorder.add("close", "hang")


class _Overlap:
    """Stateless: notes how many of its calls (of any instance) run at once, waiting up to
    `wait_seconds` in each call for a second one to arrive; fails where told."""

    def __init__(self, params: Mapping[str, Any], recorder: Recorder) -> None:
        self._params = params
        self._recorder = recorder
        recorder.add("open", "overlap")

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        index = inputs["index"]
        self._recorder.add("enter", str(index))
        _wait_for_company(self._recorder, self._params["wait_seconds"])
        self._recorder.add("overlap", str(index), threading.current_thread().name)
        if index in self._params["fail_on"]:
            raise RuntimeError(f"overlap fails on {index}")
        return {"index": index}

    def close(self) -> None:
        self._recorder.add("close", "overlap")


def _wait_for_company(recorder: Recorder, wait_seconds: float) -> None:
    """Note one more call inside, and wait (up to `wait_seconds`) until two have been inside at
    once. A run takes its first frame alone, so the first call waits 0.2 s at most: long
    enough for a second frame to show up if the engine sent one."""
    with recorder.inside_changed:
        recorder.inside += 1
        recorder.entered += 1
        recorder.most_inside = max(recorder.most_inside, recorder.inside)
        recorder.inside_changed.notify_all()
        longest = wait_seconds if recorder.entered > 1 else min(wait_seconds, 0.2)
        recorder.inside_changed.wait_for(lambda: recorder.most_inside >= 2, longest)
        recorder.inside -= 1


def _content_index(inputs: Mapping[str, Any], params: Mapping[str, Any], recorder: Recorder) -> Mapping[str, Any]:
    """The index drawn into the frame (`fakes.media`), read after waiting for company."""
    from fakes.media import read_frame_index

    _wait_for_company(recorder, params["wait_seconds"])
    return {"index": read_frame_index(inputs["image"])}


class _FailingToJson:
    def to_json(self) -> Any:
        raise ValueError("no JSON for this one")


def _holding_itself() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def _long_failure() -> Any:
    raise RuntimeError("x" * 100_000)


_RAW_OUTPUTS: dict[str, Callable[[], Any]] = {
    "bytes": lambda: b"\x00raw",
    "nan": lambda: float("nan"),
    "set": lambda: {1, 2},
    "huge_int": lambda: 10**400,
    "holds_itself": _holding_itself,
    "failing_to_json": _FailingToJson,
    "long_failure": _long_failure,
    "lone_surrogate": lambda: b"caf\xe9".decode("utf-8", "surrogateescape"),
}


def _raw_output(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    if inputs["index"] in params["on_frames"]:
        return {"value": _RAW_OUTPUTS[params["kind"]](), "index": inputs["index"]}
    return {"value": inputs["index"], "index": inputs["index"]}


def _padding(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"text": "x" * params["size_bytes"]}


def _add(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"sum": inputs["left"] + inputs["right"] + params["offset"]}


def _bad_output(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"value": object()} if params["broken"] else {"value": 1}


class _SlowJson:
    """An output whose own conversion takes time, as a large object's to_json() may."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def to_json(self) -> Any:
        time.sleep(self._seconds)
        return {"slow": True}


def _slow_json(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"value": _SlowJson(params["seconds"])}


def _size(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"length": len(inputs["data"])}


def _timed_call(inputs: Mapping[str, Any], params: Mapping[str, Any], recorder: Recorder) -> Mapping[str, Any]:
    """Notes the thread it runs in, takes `seconds`, fails where told."""
    index = inputs["index"]
    recorder.add("timed", str(index), threading.current_thread().name)
    time.sleep(params["seconds"])
    if index in params["fail_on"]:
        raise RuntimeError(f"timed call fails on {index}")
    return {"index": index}


def _timed_tool(name: str, recorder: Recorder, *, bounded_time: bool) -> Tool:
    """`_timed_call` as a tool, with or without the promise of a bounded time."""
    return function_tool(
        name, lambda inputs, params: _timed_call(inputs, params, recorder),
        description=f"Notes the thread it runs in; bounded_time={bounded_time}.",
        inputs=(Port("index"),),
        outputs=(Port("index"),),
        params=(
            Param("seconds", float, 0.0, "time each call takes"),
            Param("fail_on", list, [], "frame indexes to fail on"),
        ),
        bounded_time=bounded_time,
    )


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
                    Param("open_seconds", float, 0.0, "time opening takes"),
                    Param("raising", str, "RuntimeError", "what failing raises", choices=tuple(_RAISED)),
                    Param("fail_opening", bool, False, "fail when opened"),
                ),
                open=lambda params: _Counter(params, recorder),
                stateful=True,
            ),
            function_tool(
                "slow_json", _slow_json,
                description="Returns an object whose to_json() takes `seconds`.",
                inputs=(Port("index"),),
                outputs=(Port("value"),),
                params=(Param("seconds", float, 0.02),),
            ),
            function_tool(
                "bounded_slow_json", _slow_json,
                description="slow_json promising a bounded time, which covers its call, not to_json().",
                inputs=(Port("index"),),
                outputs=(Port("value"),),
                params=(Param("seconds", float, 0.02),),
                bounded_time=True,
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
            Tool(
                name="hang",
                description="Never returns on the given frames (until the recorder releases it).",
                inputs=(Port("index"),),
                outputs=(Port("index"),),
                params=(
                    Param("hang_on", list, [], "frame indexes to hang on"),
                    Param("hang_seconds", float, 3600.0, "longest hang, so a forgotten test thread ends"),
                    Param("hang_in_close", bool, False, "hang in close() instead"),
                ),
                open=lambda params: _Hang(params, recorder),
            ),
            Tool(
                name="overlap",
                description="Notes how many frames pass it at once.",
                inputs=(Port("index"),),
                outputs=(Port("index"),),
                params=(
                    Param("wait_seconds", float, 0.0, "longest wait in a call for another call to arrive"),
                    Param("fail_on", list, [], "frame indexes to fail on"),
                ),
                open=lambda params: _Overlap(params, recorder),
            ),
            function_tool(
                "content_index", lambda inputs, params: _content_index(inputs, params, recorder),
                description="The frame index drawn into an indexed test video, read while another frame is in too.",
                inputs=(Port("image"),),
                outputs=(Port("index"),),
                params=(Param("wait_seconds", float, 0.0, "longest wait in a call for another call to arrive"),),
            ),
            function_tool(
                "raw_output", _raw_output,
                description="Returns a value that is not JSON-like (bytes, NaN, a set, ...) on the given frames.",
                inputs=(Port("index"),),
                outputs=(Port("value"), Port("index")),
                params=(Param("kind", str, "bytes", choices=tuple(_RAW_OUTPUTS)), Param("on_frames", list, [])),
            ),
            function_tool(
                "padding", _padding,
                description="A string of size_bytes per frame: large results for backpressure tests.",
                inputs=(Port("index"),),
                outputs=(Port("text"),),
                params=(Param("size_bytes", int, 1024),),
            ),
            function_tool(
                "size", _size,
                description="Length of the encoded frame.",
                inputs=(Port("data"),),
                outputs=(Port("length"),),
            ),
            _timed_tool("bounded", recorder, bounded_time=True),
            _timed_tool("unbounded", recorder, bounded_time=False),
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


OVERLAPPING_PIPELINE = """
id: overlapping
version: "1"
nodes:
  - id: meet
    plugin: test.overlap
    params: {wait_seconds: %s}
    inputs: {index: frame.index}
outputs:
  index: meet.index
"""


def overlapping_dag(folder: Path, recorder: Recorder, wait_seconds: float) -> DagPipelineService:
    """A DAG service with pipeline "overlapping" (one `test.overlap` node) and two frame workers."""
    folder.mkdir()
    (folder / "overlapping.yaml").write_text(OVERLAPPING_PIPELINE % wait_seconds)
    return DagPipelineService(load_pipeline_folder(folder, make_registry(recorder)), frame_workers=2)


def frame_payloads(count: int) -> Iterator[dict[str, Any]]:
    """Payloads as the video layer gives them, without pixels: enough for the `test` tools."""
    for index in range(count):
        yield {"frame_index": index, "timestamp": index / 25, "image": None}


BUILTIN_PIPELINE_FOLDER = Path(__file__).resolve().parents[2] / "service" / "videodag_service" / "pipelines"


def counter_pipeline(pipeline_id: str, **params: object) -> str:
    """The YAML of a one-node pipeline on `test.counter` with `params` (delay_seconds, fail_on, ...)."""
    return (
        f'id: {pipeline_id}\nversion: "1"\nnodes:\n  - id: count\n    plugin: test.counter\n'
        f"    params: {json.dumps(params)}\n    inputs: {{index: frame.index}}\noutputs:\n  seen: count.count\n"
    )


def builtin_tool_pipeline(pipeline_id: str, tool: str, params: Mapping[str, object]) -> str:
    """The YAML of a pipeline whose node 'n' runs the built-in `tool` ("plugin.tool") with `params`, on the
    frame's image and, for a detections input, on those of a `hog.detect_people` node 'find' (it needs no
    model file); the pipeline outputs every output of 'n' under its port's name."""
    plugin_name, tool_name = tool.split(".")
    declared = PluginRegistry(builtin_plugins()).tool(plugin_name, tool_name)
    assert declared is not None, f"no built-in tool {tool}"
    sources = {"image": "frame.image", "detections": "find.detections"}
    inputs = {port.name: sources[str(port.kind)] for port in declared.inputs}
    finder = ("  - id: find\n    plugin: hog.detect_people\n    inputs: {image: frame.image}\n"
              if "find.detections" in inputs.values() else "")
    outputs = "".join(f"  {port.name}: n.{port.name}\n" for port in declared.outputs)
    return (
        f'id: {pipeline_id}\nversion: "1"\nnodes:\n{finder}  - id: n\n    plugin: {tool}\n'
        f"    params: {json.dumps(params)}\n    inputs: {json.dumps(inputs)}\noutputs:\n{outputs}"
    )


def dag_with_test_pipelines(folder: Path, pipelines: Mapping[str, str]) -> DagPipelineService:
    """A DAG service with `pipelines` ({file name: YAML}) on the `test` plugin, plus the built-in
    `frame_stats_v1`, so jobs and runs can mix a real pipeline with controllable ones."""
    (folder / "frame_stats_v1.yaml").write_text((BUILTIN_PIPELINE_FOLDER / "frame_stats_v1.yaml").read_text())
    for name, text in pipelines.items():
        (folder / name).write_text(text)
    registry = PluginRegistry([*builtin_plugins(), make_test_plugin(Recorder())])
    return DagPipelineService(load_pipeline_folder(folder, registry))


def params_as_loaded(tool: Tool, **given: Any) -> dict[str, Any]:
    """A tool's parameters as the loader hands them to `open` and to its check (`resolve_params`): every
    declared one, given or default, an int given for a float as that float. A value outside its bounds is
    handed over, as the loader hands it to the check; one the loader never hands over (an unknown name,
    another type, a required one missing) fails the test."""
    resolved = resolve_params(tool, given)
    assert resolved.checkable, f"the loader hands {tool.name} no parameters for {given}: {list(resolved.problems)}"
    return resolved.values


def declared_problems(tool: Tool, **given: Any) -> list[str]:
    """What the loader says of each given value that does not fit its declaration (type, choices, bounds)."""
    declared = {param.name: param for param in tool.params}
    return [problem for name, value in given.items() if (problem := declared[name].problem_with(value))]
