"""A parameter's declared bounds: checked where its type is, by the loader as the server starts, with the
file, node, parameter, value and range named; optional, so a declaration without them reads as before."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from videodag_service.dag import (
    Param,
    Plugin,
    PluginRegistry,
    Port,
    function_tool,
    load_pipeline_file,
)
from videodag_service.dag.loader import PipelineFileError


@pytest.mark.parametrize(
    ("param", "allowed_range"),
    [
        (Param("score", float, 0.5, minimum=0, maximum=1), "in [0, 1]"),
        (Param("iou", float, 0.5, minimum=0, minimum_inclusive=False, maximum=1), "in (0, 1]"),
        (Param("rate", float, 0.5, minimum=0, maximum=1, maximum_inclusive=False), "in [0, 1)"),
        (Param("scale", float, 1.5, minimum=0.25, maximum=4.0), "in [0.25, 4.0]"),
        (Param("buffer", int, 30, minimum=0), ">= 0"),
        (Param("spacing", float, 1.05, minimum=1, minimum_inclusive=False), "> 1"),
        (Param("count", int, 1, maximum=2**31 - 1), "<= 2147483647"),
        (Param("share", float, 0.1, maximum=1, maximum_inclusive=False), "< 1"),
        (Param("offset", int, 0), None),
    ],
)
def test_the_range_reads_as_declared(param: Param, allowed_range: str | None) -> None:
    assert param.allowed_range == allowed_range


@pytest.mark.parametrize(
    ("param", "inside", "outside"),
    [
        (Param("score", float, 0.5, minimum=0, maximum=1), [0, 0.0, 1, 1.0, 0.5], [-0.001, 1.001, -1, 2]),
        (Param("iou", float, 0.5, minimum=0, minimum_inclusive=False, maximum=1), [1e-9, 1.0], [0, 0.0, -1.0]),
        (Param("rate", float, 0.5, minimum=0, maximum=1, maximum_inclusive=False), [0.0, 0.999], [1, 1.0]),
        (Param("buffer", int, 30, minimum=0), [0, 1, 10**30], [-1, -(10**30)]),
        (Param("rate", int, 30, minimum=0, minimum_inclusive=False), [1], [0, -5]),
        (Param("count", int, 1, minimum=1, maximum=2**31 - 1), [1, 2**31 - 1], [0, 2**31, 3_000_000_000]),
        (Param("share", float, 0.1, maximum=1, maximum_inclusive=False), [-1e300, 0.999], [1, 1e300]),
    ],
)
def test_values_are_checked_against_each_bound_inclusive_or_not(
    param: Param, inside: list[Any], outside: list[Any]
) -> None:
    for value in inside:
        assert param.problem_with(value) is None, value
        assert param.problem_with_range(value) is None, value
    for value in outside:
        problem = param.problem_with(value)
        assert problem == f"parameter {param.name!r} must be {param.allowed_range}, got {value!r}", value
        assert param.problem_with_range(value) == problem
        assert param.problem_with_type(value) is None


def test_the_message_says_what_the_parameter_means() -> None:
    param = Param("history", int, 200, "frames the background model remembers", minimum=1)
    assert param.problem_with(0) == "parameter 'history' must be >= 1, got 0: frames the background model remembers"


def test_a_bool_is_not_taken_for_a_bounded_number() -> None:
    """True is an int to Python, and 1 >= 0: it must still be refused for its type, not pass the range."""
    count = Param("count", int, 1, minimum=0, maximum=10)
    assert count.problem_with(True) == "parameter 'count' must be int, got bool True"
    assert count.problem_with_type(False) == "parameter 'count' must be int, got bool False"
    scale = Param("scale", float, 0.5, minimum=0, maximum=1)
    assert scale.problem_with(True) == "parameter 'scale' must be float, got bool True"


def test_a_float_is_not_taken_for_a_bounded_int() -> None:
    assert Param("count", int, 1, minimum=0).problem_with(2.0) == "parameter 'count' must be int, got float 2.0"


def test_parameters_declared_without_bounds_read_as_before() -> None:
    param = Param("mode", str, "slow", "how", ("slow", "exact"))  # every field by position, as before
    assert (param.minimum, param.maximum, param.minimum_inclusive, param.maximum_inclusive) == (None, None, True, True)
    assert param.allowed_range is None
    assert Param("offset", int, -5).problem_with(-(10**9)) is None
    with pytest.raises(TypeError):
        Param("score", float, 0.5, "", (), 0)  # type: ignore[misc]  # bounds are given by keyword only


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: Param("label", str, "x", minimum=0), "parameter 'label' of type str declares a minimum; only int and "
                                                      "float parameters have bounds"),
        (lambda: Param("keep", bool, True, maximum=1), "parameter 'keep' of type bool declares a maximum; only int "
                                                       "and float parameters have bounds"),
        (lambda: Param("count", int, 1, minimum=0.5), "the minimum of parameter 'count' must be a finite int, got "
                                                      "float 0.5"),
        (lambda: Param("count", int, 1, minimum=True), "the minimum of parameter 'count' must be a finite int, got "
                                                       "bool True"),
        (lambda: Param("scale", float, 1.0, maximum=math.inf), "the maximum of parameter 'scale' must be a finite "
                                                               "float, got float inf"),
        (lambda: Param("scale", float, 1.0, maximum="2"), "the maximum of parameter 'scale' must be a finite float, "
                                                          "got str '2'"),
        (lambda: Param("scale", float, 1.0, minimum=2, maximum=1), "parameter 'scale' declares bounds no value fits: "
                                                                   "in [2, 1]"),
        (lambda: Param("scale", float, 1.0, minimum=1, maximum=1, maximum_inclusive=False),
         "parameter 'scale' declares bounds no value fits: in [1, 1)"),
        (lambda: Param("scale", float, 1.0, minimum_inclusive=False), "parameter 'scale' excludes its minimum but "
                                                                      "declares none"),
        (lambda: Param("scale", float, 1.0, minimum=0, minimum_inclusive=0),  # type: ignore[arg-type]
         "parameter 'scale': minimum_inclusive must be True or False, got 0"),
        (lambda: Param("score", float, 2.0, minimum=0, maximum=1), "the default of parameter 'score' must be in "
                                                                   "[0, 1], got 2.0"),
        (lambda: Param("score", float, 0.0, minimum=0, minimum_inclusive=False), "the default of parameter 'score' "
                                                                                 "must be > 0, got 0.0"),
        (lambda: Param("size", int, 640, choices=(320, 640, 8192), maximum=4096),
         "a choice of parameter 'size' must be <= 4096, got 8192"),
    ],
)
def test_bounds_no_pipeline_could_meet_are_refused_at_declaration(declare: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        declare()
    assert str(refused.value) == message


def test_a_default_of_none_is_not_set_and_takes_no_bound() -> None:
    assert Param("limit", float, None, minimum=0).default is None


# --- the loader --------------------------------------------------------------------------------------


def _scaled(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": inputs["index"] * params["factor"]}


def registry(checked: list[Mapping[str, Any]]) -> PluginRegistry:
    """A tool with bounded parameters and a check of its own, which notes what it is handed."""

    def check(params: Mapping[str, Any]) -> None:
        checked.append(dict(params))
        if params["low"] > params["high"]:
            raise ValueError(f"low ({params['low']}) must not exceed high ({params['high']})")

    tool = function_tool(
        "scale", _scaled, description="index times factor",
        inputs=(Port("index"),), outputs=(Port("value"),),
        params=(
            Param("factor", float, 1.0, "multiplier", minimum=0, minimum_inclusive=False, maximum=10),
            Param("steps", int, 1, minimum=1),
            Param("low", float, 0.1, minimum=0, maximum=1),
            Param("high", float, 0.9, minimum=0, maximum=1),
        ),
        check_params=check,
    )
    return PluginRegistry([Plugin(name="bounded", description="Bounded parameters.", tools=(tool,))])


def write(folder: Path, params: str) -> Path:
    path = folder / "bounded.yaml"
    path.write_text(textwrap.dedent(f"""
        id: bounded
        version: "1"
        nodes:
          - id: scale_it
            plugin: bounded.scale
            params: {params}
            inputs: {{index: frame.index}}
        outputs:
          value: scale_it.value
        """))
    return path


def problems_in(path: Path, checked: list[Mapping[str, Any]]) -> list[str]:
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, registry(checked))
    return caught.value.problems


def test_a_value_out_of_range_stops_the_load_naming_file_node_parameter_value_and_range(tmp_path: Path) -> None:
    path = write(tmp_path, "{factor: 0}")
    assert problems_in(path, []) == [
        f"{path}: node 'scale_it': parameter 'factor' must be in (0, 10], got 0: multiplier"
    ]


def test_every_value_out_of_range_of_a_node_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "{factor: 10.5, steps: 0, low: -1}")
    assert problems_in(path, []) == [
        f"{path}: node 'scale_it': parameter 'factor' must be in (0, 10], got 10.5: multiplier",
        f"{path}: node 'scale_it': parameter 'steps' must be >= 1, got 0",
        f"{path}: node 'scale_it': parameter 'low' must be in [0, 1], got -1",
    ]


def test_the_tools_check_still_runs_beside_values_out_of_range(tmp_path: Path) -> None:
    """A relation between two values is the check's to say, and shows with the range problems."""
    checked: list[Mapping[str, Any]] = []
    path = write(tmp_path, "{steps: 0, low: 0.8, high: 0.2}")
    assert problems_in(path, checked) == [
        f"{path}: node 'scale_it': parameter 'steps' must be >= 1, got 0",
        f"{path}: node 'scale_it': low (0.8) must not exceed high (0.2)",
    ]
    assert checked == [{"factor": 1.0, "steps": 0, "low": 0.8, "high": 0.2}]


def test_a_value_of_the_wrong_type_is_never_compared_nor_handed_to_the_check(tmp_path: Path) -> None:
    checked: list[Mapping[str, Any]] = []
    path = write(tmp_path, "{steps: true, factor: many}")
    assert problems_in(path, checked) == [
        f"{path}: node 'scale_it': parameter 'factor' must be float, got str 'many'",
        f"{path}: node 'scale_it': parameter 'steps' must be int, got bool True",
    ]
    assert checked == []


def test_values_on_an_inclusive_bound_load(tmp_path: Path) -> None:
    checked: list[Mapping[str, Any]] = []
    spec = load_pipeline_file(write(tmp_path, "{factor: 10, steps: 1, low: 0, high: 1}"), registry(checked))
    assert spec.nodes[0].params == {"factor": 10.0, "steps": 1, "low": 0.0, "high": 1.0}
    assert isinstance(spec.nodes[0].params["factor"], float)
    assert checked == [{"factor": 10.0, "steps": 1, "low": 0.0, "high": 1.0}]
