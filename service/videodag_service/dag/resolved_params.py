"""A node's parameters as its tool gets them: the values a pipeline file gives, checked against the
tool's declarations, with defaults filled in.

Apart from the loader so that whatever hands a tool its parameters (the loader, a test calling a
tool directly) hands over the same values, each of its declared type, defaults included: an int
for a float parameter (YAML reads a threshold of `1` as an int) becomes that float, a tuple for a
list parameter that list, so no tool meets an int where it declared a float.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videodag_service.dag.plugin import Tool


@dataclass(frozen=True)
class ResolvedParams:
    """What `resolve_params` found: the values, and every problem with those given."""

    values: dict[str, Any]
    """Every declared parameter that has a value of its type: the one given (an int given for a
    float parameter as that float), else the default. A value outside its bounds is kept, so that
    the tool's own check sees it; one of another type, or a required one not given, is left out."""
    problems: tuple[str, ...]
    """Each unknown name, then each declared parameter's problem in declaration order: missing,
    of another type or outside the choices, outside the bounds."""
    checkable: bool
    """Whether the tool's own check may be handed `values`: every problem, if any, is a value
    outside its bounds, so every declared parameter is there and of its type."""


# A number with an exponent, as JSON and YAML 1.2 write it; YAML 1.1 reads one only with a dot
# and a signed exponent (1.0e+3), and `5e-1` or `1e-3` as text. Taken as a number where a float
# parameter is given it, and only there: ids, versions and names such as `2e5` stay text.
_NUMBER_WITH_EXPONENT = re.compile(r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+")


def number_with_exponent(value: Any) -> Any:
    """`value`, or the float it writes when it is a text YAML 1.1 left a number with an exponent in."""
    if isinstance(value, str) and _NUMBER_WITH_EXPONENT.fullmatch(value):
        return float(value.replace("_", ""))
    return value


def resolve_params(tool: Tool, given: Mapping[str, Any]) -> ResolvedParams:
    """`tool`'s parameters from those `given` (by a pipeline file's node) and its declarations."""
    declared = {param.name: param for param in tool.params}
    accepted = ", ".join(declared) or "none"
    problems = [f"unknown parameter {name!r} for {tool.name} (accepted: {accepted})"
                for name in sorted(set(given) - set(declared))]
    out_of_range = 0
    values: dict[str, Any] = {}
    for param in tool.params:
        if param.name not in given:
            if param.required:
                problems.append(f"missing required parameter {param.name!r}")
            else:
                values[param.name] = param.as_handed(param.default)
            continue
        value = number_with_exponent(given[param.name]) if param.kind is float else given[param.name]
        if value is None and param.default is None:  # given as it defaults: not set
            values[param.name] = None
            continue
        problem = param.problem_with_type(value)
        if problem:
            problems.append(problem)
            continue
        problem = param.problem_with_range(value)
        if problem:
            problems.append(problem)
            out_of_range += 1
        values[param.name] = param.as_handed(value)
    return ResolvedParams(values=values, problems=tuple(problems), checkable=len(problems) == out_of_range)
