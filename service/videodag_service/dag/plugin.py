"""The plugin interface: what a plugin declares and how the engine drives it.

A *plugin* is a named group of *tools*. A tool declares its inputs, outputs and typed
parameters, and opens one *tool instance* per video run; the engine calls
`process(inputs)` once per frame and `close()` when the run ends, on every path.
Stateful tools (trackers) keep their state in the instance, so two runs never share it.
Heavy immutable resources (model weights) should be loaded once per process by the
plugin and shared by instances; `open` must stay cheap because single-frame callers
open a run per call.

Example, a stateless tool::

    def _brightness(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        return {"mean": float(inputs["image"].mean()) * params["scale"]}

    PLUGIN = Plugin(
        name="example",
        description="Examples.",
        tools=(
            function_tool(
                "brightness", _brightness,
                description="Mean pixel value.",
                inputs=(Port("image", "BGR frame", kind="image"),),
                outputs=(Port("mean", "mean pixel value, scaled", kind="float"),),
                params=(Param("scale", float, 1.0, "multiplier", minimum=0),),
            ),
        ),
    )

A tool's parameters are `params.Param`s and its inputs and outputs `ports.Port`s; plugins import
them, with `Plugin` and `Tool`, from `videodag_service.dag`.

Third-party packages expose a `Plugin` (or a zero-argument callable returning one)
in the `videodag.plugins` entry-point group::

    [project.entry-points."videodag.plugins"]
    example = "my_package.plugin:PLUGIN"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from videodag_service.dag.params import Param
from videodag_service.dag.ports import Port, check_name


@runtime_checkable
class ToolInstance(Protocol):
    """One tool opened for one run. Not shared between runs or threads."""

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """Handle one frame: `inputs` holds exactly the declared inputs; return every declared output."""
        ...

    def close(self) -> None:
        """Release what the instance holds; called once when its run ends, however it ends."""
        ...


ToolOpener = Callable[[Mapping[str, Any]], ToolInstance]
ParamCheck = Callable[[Mapping[str, Any]], None]


def _check_unique(names: Sequence[str], what: str, owner: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{owner} declares {what} {', '.join(map(repr, repeated))} more than once")


@dataclass(frozen=True)
class Tool:
    """A tool a pipeline node can call: its contract and how to open an instance.

    `open(params)` receives every declared parameter, given or default, each of its type,
    among its choices and within its bounds: it need not check those again.
    `stateful` says whether an instance remembers earlier frames (shown to clients). A
    stateful tool is opened once per run and sees every frame in order. A stateless one may
    be opened several times in a run, one instance per frame in flight, and those instances
    run at the same time in different threads: they must not share anything unguarded.

    `bounded_time` promises that a call cannot hang: its time is set by the size of its
    inputs, as for a sum, a resize or a colour conversion, with no I/O, no waiting on other
    threads or processes and no loop of unknown length. The engine then calls the tool in
    the run's own thread, without the node time limit, which exists to stop a call that may
    never return, and without the two hand-offs between threads a call under that limit
    costs: for a node as quick as `stats.frame_stats` those hand-offs cost 5% of the whole
    service's frame rate (720p, 2 cores). When bounded nodes take long enough for frames in
    parallel (see `executor.PARALLEL_MIN_SECONDS`), they go to the parallel lanes as usual.

    `check_params(params)`, when given, is called when the pipeline file is loaded, with the
    same parameters `open` will get, and raises ValueError (InvalidParams for several) naming
    each bad value. It is for what a `Param` cannot declare (one parameter against another, a
    file that must exist). It runs once every value has its type and is among its choices;
    values outside their bounds are reported by the loader, and still handed to the check so
    that a node's problems all show at once: it must take them without failing, and need not
    report them again. A bad value is then refused as the server starts, with the file and
    node named, instead of failing every run when `open` meets it. It should share its rules
    with `open` (open calls it, or both build the same settings) and stay cheap: no model
    loading, no network.
    """

    name: str
    description: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    open: ToolOpener
    params: tuple[Param, ...] = ()
    stateful: bool = False
    bounded_time: bool = False
    check_params: ParamCheck | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "tool")
        owner = f"tool {self.name!r}"
        _check_unique([param.name for param in self.params], "parameter", owner)
        _check_unique([port.name for port in self.inputs], "input", owner)
        _check_unique([port.name for port in self.outputs], "output", owner)


@dataclass(frozen=True)
class Plugin:
    """A named group of tools, referenced in pipelines as `plugin.tool`."""

    name: str
    description: str
    tools: tuple[Tool, ...]

    def __post_init__(self) -> None:
        check_name(self.name, "plugin")
        _check_unique([tool.name for tool in self.tools], "tool", f"plugin {self.name!r}")

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


class _FunctionInstance:
    """Adapts a pure function to the instance protocol; it keeps no state between frames."""

    def __init__(self, function: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]],
                 params: Mapping[str, Any]) -> None:
        self._function = function
        self._params = params

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._function(inputs, self._params)

    def close(self) -> None:
        return None


def function_tool(
    name: str,
    function: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]],
    *,
    description: str,
    inputs: tuple[Port, ...],
    outputs: tuple[Port, ...],
    params: tuple[Param, ...] = (),
    bounded_time: bool = False,
    check_params: ParamCheck | None = None,
) -> Tool:
    """Build a stateless tool from `function(inputs, params) -> outputs` (see `Tool` for `bounded_time`
    and `check_params`)."""
    return Tool(
        name=name,
        description=description,
        inputs=inputs,
        outputs=outputs,
        params=params,
        open=lambda validated: _FunctionInstance(function, validated),
        stateful=False,
        bounded_time=bounded_time,
        check_params=check_params,
    )
