"""A tool gets the same parameters whoever hands them over: the loader, from a pipeline file, and the
tests that call a tool directly (`fakes.fake_plugins.params_as_loaded`) both go through `resolve_params`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import params_as_loaded
from videodag_service.dag import (
    REQUIRED,
    Param,
    Plugin,
    PluginRegistry,
    Port,
    Tool,
    function_tool,
    load_pipeline_file,
    resolve_params,
)


def _scaled(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": inputs["value"] * params["factor"]}


def _scale_tool(checked: list[Mapping[str, Any]] | None = None) -> Tool:
    return function_tool(
        "scale", _scaled, description="Scales a number.",
        inputs=(Port("value", kind="float"),), outputs=(Port("value", kind="float"),),
        params=(
            Param("factor", float, 1.0, "multiplier", minimum=0),
            Param("label", str, REQUIRED, "what the number is"),
        ),
        check_params=None if checked is None else checked.append,
    )


def test_an_int_given_for_a_float_parameter_is_handed_to_the_tool_as_a_float(tmp_path: Path) -> None:
    checked: list[Mapping[str, Any]] = []
    tool = _scale_tool(checked)
    path = tmp_path / "scaled.yaml"
    path.write_text('id: scaled\nversion: "1"\nnodes:\n  - id: scale\n    plugin: numbers.scale\n'
                    "    params: {factor: 2, label: seconds}\n    inputs: {value: frame.timestamp}\n"
                    "outputs:\n  value: scale.value\n")
    spec = load_pipeline_file(path, PluginRegistry([Plugin("numbers", "Numbers.", (tool,))]))
    (loaded,) = checked
    assert type(loaded["factor"]) is float and type(spec.nodes[0].params["factor"]) is float
    by_hand = params_as_loaded(tool, factor=2, label="seconds")
    assert by_hand == loaded and type(by_hand["factor"]) is float


def test_a_value_out_of_range_is_kept_for_the_check_and_reported() -> None:
    resolved = resolve_params(_scale_tool(), {"factor": -1, "label": "seconds"})
    assert resolved.values == {"factor": -1.0, "label": "seconds"}
    assert resolved.problems == ("parameter 'factor' must be >= 0, got -1: multiplier",)
    assert resolved.checkable


def test_unknown_missing_and_mistyped_values_are_reported_in_order_and_leave_nothing_to_check() -> None:
    resolved = resolve_params(_scale_tool(), {"factor": "big", "colour": "red"})
    assert resolved.problems == (
        "unknown parameter 'colour' for scale (accepted: factor, label)",
        "parameter 'factor' must be float, got str 'big'",
        "missing required parameter 'label'",
    )
    assert resolved.values == {}
    assert not resolved.checkable


def test_params_as_loaded_refuses_what_the_loader_never_hands_over() -> None:
    with pytest.raises(AssertionError, match="missing required parameter 'label'"):
        params_as_loaded(_scale_tool(), factor=2)


def test_defaults_reach_the_tool_of_their_declared_type_and_null_sets_a_default_of_null() -> None:
    """A tuple default of a list parameter arrived as the tuple (a tool appending to it failed),
    an int default of a float one as the int; `null` for a parameter that defaults to null was refused."""
    tool = function_tool(
        "kinds", _scaled, description="Parameters of each kind.",
        inputs=(Port("value", kind="float"),), outputs=(Port("value", kind="float"),),
        params=(
            Param("names", list, ("a", "b"), "a list whose default is a tuple"),
            Param("factor", float, 2, "a float whose default is an int"),
            Param("flags", dict, None, "not set by default"),
        ),
    )
    defaults = resolve_params(tool, {})
    assert defaults.values == {"names": ["a", "b"], "factor": 2.0, "flags": None}
    assert type(defaults.values["names"]) is list and type(defaults.values["factor"]) is float
    given = resolve_params(tool, {"names": ["c"], "factor": 3, "flags": None})
    assert (given.values, given.problems) == ({"names": ["c"], "factor": 3.0, "flags": None}, ())
    assert type(given.values["factor"]) is float
