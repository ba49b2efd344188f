"""Arguments of the wrong kind, refused with a TypeError that names the argument.

Type hints catch them in checked code; an untyped caller (a JSON config read into a dict, ids
kept as numbers) got protobuf's "bad argument type for built-in operation" or an
AttributeError about the client's own code instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from videodag.v1 import job_pb2
from videodag_client._job_values import JobState
from videodag_client._options import RunOptions


def text_argument(name: str, value: object) -> str:
    """`value`, which must be a str (a job or pipeline id)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def run_options_argument(options: object) -> RunOptions | None:
    """`options`, which must be a RunOptions or None."""
    if options is None or isinstance(options, RunOptions):
        return options
    hint = ": RunOptions(**options) makes one of a dict" if isinstance(options, Mapping) else ""
    raise TypeError(f"options must be a RunOptions, got {type(options).__name__}{hint}")


def job_states(states: Iterable[object]) -> tuple[JobState, ...]:
    """`states`, which must all be JobState members, as a tuple."""
    if isinstance(states, str | JobState):
        raise TypeError(f"states must be an iterable of JobState, got one {type(states).__name__}: [JobState.X]")
    checked = tuple(states)
    for state in checked:
        if not isinstance(state, JobState):
            hint = f" (JobState.{state})" if isinstance(state, str) and state in JobState.__members__ else ""
            raise TypeError(f"states must hold JobState members, got {state!r}{hint}")
    return cast(tuple[JobState, ...], checked)


def state_values(states: Iterable[object]) -> list[job_pb2.JobState.ValueType]:
    """The numbers of `states` as a request holds them."""
    return [state.value for state in job_states(states)]
