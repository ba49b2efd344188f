"""A plugin's declaration that no pipeline could use is refused as it is made, naming what is wrong.

Third-party plugins declare their tools in code; a mistake there (a default of the wrong type,
a name a pipeline file cannot write) used to surface only when a pipeline set the value, or
when a client listed the plugins. Refused at declaration, it fails the plugin's import, and
the registry names the entry point.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from videodag_service.dag import Param, Plugin, Port, function_tool


def _identity(inputs: Any, params: Any) -> dict[str, Any]:
    return dict(inputs)


def _tool(name: str = "copy", *, params: tuple[Param, ...] = (), inputs: tuple[Port, ...] = (Port("value"),),
          outputs: tuple[Port, ...] = (Port("value"),)) -> Any:
    return function_tool(name, _identity, description="copies", inputs=inputs, outputs=outputs, params=params)


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: Param("size", tuple, (1, 2)), "parameter 'size' declares type 'tuple'; the types are bool, int"),
        (lambda: Param("threshold", float, "0.5"), "the default of parameter 'threshold' must be float, got str"),
        (lambda: Param("count", int, True), "the default of parameter 'count' must be int, got bool"),
        (lambda: Param("count", int, 2.0), "the default of parameter 'count' must be int, got float"),
        (lambda: Param("limit", float, math.inf), "the default of parameter 'limit' must be plain JSON-like data"),
        (lambda: Param("names", list, [b"person"]), "the default of parameter 'names' must be plain JSON-like data"),
        (lambda: Param("mode", str, "fast", choices=("slow", "exact")),
         "the default of parameter 'mode' must be one of ['slow', 'exact'], got 'fast'"),
        (lambda: Param("mode", str, "slow", choices=("slow", 2)), "a choice of parameter 'mode' must be str, got int"),
        (lambda: Param("", float, 0.5), "parameter name '' must be a non-empty string"),
    ],
)
def test_a_parameter_no_pipeline_could_use_is_refused_naming_it(declare: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        declare()
    assert str(refused.value).startswith(message), str(refused.value)


def test_parameters_a_pipeline_can_use_are_declared_as_before() -> None:
    assert Param("scale", float, 1).default == 1  # an int is a float's value, as in a pipeline file
    assert Param("names", list, []).default == []
    assert Param("mode", str, "slow", choices=("slow", "exact")).choices == ("slow", "exact")
    assert Param("model_path", str).required
    assert Param("label", str, None).default is None  # "not set", as many tools spell it
    assert Param("zones", list, ()).default == ()  # an immutable list
    assert Param("score.min", float, 0.5).name == "score.min"  # a key of `params:`, never split


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: _tool(params=(Param("k", int, 1), Param("k", int, 2))),
         "tool 'copy' declares parameter 'k' more than once"),
        (lambda: _tool(inputs=(Port("a"), Port("a"))), "tool 'copy' declares input 'a' more than once"),
        (lambda: _tool(outputs=(Port("b"), Port("b"), Port("c"))), "tool 'copy' declares output 'b' more than once"),
        (lambda: _tool("copy.all"), "tool name 'copy.all' must be a non-empty string without '.' (pipeline files "
                                    "write plugin.tool and node.output)"),
        (lambda: Port("boxes.xyxy"), "port name 'boxes.xyxy' must be a non-empty string without '.' (pipeline "
                                     "files write plugin.tool and node.output)"),
        (lambda: Plugin("", "", (_tool(),)), "plugin name '' must be a non-empty string without '.' (pipeline "
                                             "files write plugin.tool and node.output)"),
        (lambda: Plugin("mine", "", (_tool(), _tool())), "plugin 'mine' declares tool 'copy' more than once"),
    ],
)
def test_a_tool_or_plugin_a_pipeline_file_could_not_name_is_refused(declare: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        declare()
    assert str(refused.value) == message


def test_names_other_than_ascii_words_still_declare() -> None:
    """Only a dot (or nothing) could not be written in a pipeline file; other names were valid before."""
    plugin = Plugin("zählung", "", (_tool("zähle", inputs=(Port("bild ein"),)),))
    assert plugin.tool("zähle") is not None
