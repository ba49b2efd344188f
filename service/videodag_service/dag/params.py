"""Tool parameters as plugins declare them (`Param`), and the error a parameter check raises.

Apart from the plugin interface (`plugin`) because a declaration carries its own rules: its type,
choices and range, checked when it is made and again for each value a pipeline file gives. The
loader, the plugin reference (`--list-plugins`) and the plugins' own checks all read them here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from videodag_service.dag.json_like import json_like_problem
from videodag_service.dag.pipeline_problems import shown


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

    def as_handed(self, value: Any) -> Any:
        """`value` (given or the default) as the tool gets it, of its declared type: an int as the
        float declared (YAML reads a threshold of `1` as an int), a tuple as the list declared."""
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.kind is list and isinstance(value, tuple):
            return list(value)
        return value

    def problem_with(self, value: Any) -> str | None:
        """Why `value` cannot be this parameter's (a sentence naming it), or None when it can."""
        return self.problem_with_type(value) or self.problem_with_range(value)

    def problem_with_type(self, value: Any) -> str | None:
        """Why `value` is not of this parameter's type (JSON-like, and among the choices when there are
        some), or None when it is: a value a tool's own check can be handed."""
        problem = self._type_problem(value)
        if problem is None and self.choices and value not in self.choices:
            problem = f"parameter {self.name!r} must be one of {list(self.choices)}, got {shown(value)}"
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
        return f"parameter {self.name!r} must be {self.allowed_range}, got {shown(value)}{meaning}"

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
            return f"parameter {self.name!r} must be {self.kind.__name__}, got {type(value).__name__} {shown(value)}"
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
