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

Third-party packages expose a `Plugin` (or a zero-argument callable returning one)
in the `videodag.plugins` entry-point group::

    [project.entry-points."videodag.plugins"]
    example = "my_package.plugin:PLUGIN"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol, runtime_checkable

from videodag_service.dag.json_like import json_like_problem


class _Required:
    """Marker default: the parameter must be given in the pipeline file."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# The Python types a parameter may declare; YAML values are checked against them at load.
PARAM_TYPES: tuple[type, ...] = (bool, int, float, str, list, dict)


@dataclass(frozen=True)
class Param:
    """A tool parameter: its name, type, default, meaning and allowed values.

    `kind` is one of bool, int, float, str, list, dict; an int is accepted where a float
    is declared. `choices`, when given, lists the only allowed values. `minimum` and
    `maximum`, when given (by keyword), bound an int or float parameter; each bound is
    inclusive unless `minimum_inclusive` or `maximum_inclusive` is False, so
    `minimum=0, minimum_inclusive=False` reads "> 0". The loader refuses a value outside
    them as the server starts, naming the file, node, parameter, value and range, and the
    plugin reference shows them: a tool's own check is left with what a bound cannot say
    (one parameter against another, a file). A declaration a pipeline could never satisfy
    (an unsupported type, bounds on another type or no value fits, a default or a choice that
    is not of its type, not JSON-like, outside the choices or the bounds) is refused when it
    is made, so a plugin's mistake fails its import, naming the parameter, not the plugin
    reference (`--list-plugins`). A default of None (not set) or, for a list, a tuple is taken
    as given.
    """

    name: str
    kind: type
    default: Any = REQUIRED
    description: str = ""
    choices: tuple[Any, ...] = ()
    _: KW_ONLY
    minimum: int | float | None = None
    maximum: int | float | None = None
    minimum_inclusive: bool = True
    maximum_inclusive: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"parameter name {self.name!r} must be a non-empty string")
        if self.kind not in PARAM_TYPES:
            raise ValueError(
                f"parameter {self.name!r} declares type {getattr(self.kind, '__name__', self.kind)!r}; "
                f"the types are {', '.join(kind.__name__ for kind in PARAM_TYPES)}"
            )
        self._check_bounds()
        for choice in self.choices:
            problem = self._type_problem(choice) or self.problem_with_range(choice)
            if problem:
                raise ValueError(f"a choice of {problem}")
        # None is "not set" to many tools, and a tuple is how Python spells an immutable list.
        if not self.required and self.default is not None:
            default = list(self.default) if self.kind is list and isinstance(self.default, tuple) else self.default
            problem = self.problem_with(default)
            if problem:
                raise ValueError(f"the default of {problem}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def allowed_range(self) -> str | None:
        """The bounds as messages and the plugin reference show them (`in (0, 1]`, `>= 1`); None without any."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            opening = "[" if self.minimum_inclusive else "("
            closing = "]" if self.maximum_inclusive else ")"
            return f"in {opening}{low!r}, {high!r}{closing}"
        if low is not None:
            return f"{'>=' if self.minimum_inclusive else '>'} {low!r}"
        if high is not None:
            return f"{'<=' if self.maximum_inclusive else '<'} {high!r}"
        return None

    def problem_with(self, value: Any) -> str | None:
        """Why `value` cannot be this parameter's (a sentence naming it), or None when it can."""
        return self.problem_with_type(value) or self.problem_with_range(value)

    def problem_with_type(self, value: Any) -> str | None:
        """Why `value` is not of this parameter's type (JSON-like, and among the choices when there are
        some), or None when it is: a value a tool's own check can be handed."""
        problem = self._type_problem(value)
        if problem is None and self.choices and value not in self.choices:
            problem = f"parameter {self.name!r} must be one of {list(self.choices)}, got {value!r}"
        return problem

    def problem_with_range(self, value: int | float) -> str | None:
        """Why a value of this parameter's type is outside its bounds, with the range and what the parameter
        means, or None when it is within them."""
        low, high = self.minimum, self.maximum
        below = low is not None and (value < low if self.minimum_inclusive else value <= low)
        above = high is not None and (value > high if self.maximum_inclusive else value >= high)
        if not (below or above):
            return None
        meaning = f": {self.description}" if self.description else ""
        return f"parameter {self.name!r} must be {self.allowed_range}, got {value!r}{meaning}"

    def _check_bounds(self) -> None:
        """Refuse bounds no pipeline could meet or that mean nothing for the parameter's type."""
        for word, bound, inclusive in (("minimum", self.minimum, self.minimum_inclusive),
                                       ("maximum", self.maximum, self.maximum_inclusive)):
            if not isinstance(inclusive, bool):
                raise ValueError(f"parameter {self.name!r}: {word}_inclusive must be True or False, got {inclusive!r}")
            if bound is None:
                if not inclusive:
                    raise ValueError(f"parameter {self.name!r} excludes its {word} but declares none")
                continue
            if self.kind not in (int, float):
                raise ValueError(f"parameter {self.name!r} of type {self.kind.__name__} declares a {word}; "
                                 "only int and float parameters have bounds")
            if not _is_bound_for(self.kind, bound):
                raise ValueError(f"the {word} of parameter {self.name!r} must be a finite {self.kind.__name__}, "
                                 f"got {type(bound).__name__} {bound!r}")
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and (
            low > high or (low == high and not (self.minimum_inclusive and self.maximum_inclusive))
        ):
            raise ValueError(f"parameter {self.name!r} declares bounds no value fits: {self.allowed_range}")

    def _type_problem(self, value: Any) -> str | None:
        # bool is an int in Python; a YAML `true` must not pass as a number, nor 1 as a bool.
        is_bool = isinstance(value, bool)
        fits = (
            (self.kind is bool and is_bool)
            or (self.kind is int and isinstance(value, int) and not is_bool)
            or (self.kind is float and isinstance(value, int | float) and not is_bool)
            or (self.kind in (str, list, dict) and isinstance(value, self.kind))
        )
        if not fits:
            return f"parameter {self.name!r} must be {self.kind.__name__}, got {type(value).__name__} {value!r}"
        # Clients are shown the values as written, and YAML gives more than JSON can hold.
        try:
            unlike = json_like_problem(value)
        except RecursionError:
            unlike = "it is nested too deeply"
        if unlike:
            return (
                f"parameter {self.name!r} must be plain JSON-like data (text, finite numbers, true/false, null, "
                f"lists, mappings with text keys): {unlike}"
            )
        return None


def _is_bound_for(kind: type, bound: Any) -> bool:
    """An int parameter's bound is an int; a float's, any finite number. Never a bool, which is an int to Python."""
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        return False
    if kind is int:
        return isinstance(bound, int)
    return isinstance(bound, int) or math.isfinite(bound)


def _check_name(name: Any, what: str) -> None:
    # Pipeline files name tools as `plugin.tool` and outputs as `node.output`: a name with a dot,
    # or an empty one, could never be written there.
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{what} name {name!r} must be a non-empty string without '.' (pipeline files "
                         "write plugin.tool and node.output)")


def _check_unique(names: Sequence[str], what: str, owner: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{owner} declares {what} {', '.join(map(repr, repeated))} more than once")


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
        _check_name(self.name, "port")
        # Refused at declaration, so a misspelt kind fails the plugin's import, not silently every check.
        if self.kind is not None and self.kind not in PORT_KINDS:
            raise ValueError(
                f"port {self.name!r} declares unknown kind {self.kind!r} (kinds: {', '.join(PORT_KINDS)})"
            )


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


class InvalidParams(ValueError):
    """Raised by a parameter check with every bad value it found, so a pipeline file's author
    sees them all at once rather than one per server start; each problem names its parameter."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def raise_if_any(problems: Sequence[str]) -> None:
    """Raise InvalidParams listing `problems`, if there are any."""
    if problems:
        raise InvalidParams(problems)


def param_problems(error: ValueError) -> tuple[str, ...]:
    """The problems a parameter check raised: each of an InvalidParams, else the error's message."""
    return error.problems if isinstance(error, InvalidParams) else (str(error),)


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
    costs: for a node as quick as `stats.frame_stats` those hand-offs were 5% of the whole
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
        _check_name(self.name, "tool")
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
        _check_name(self.name, "plugin")
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
