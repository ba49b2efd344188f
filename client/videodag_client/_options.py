"""How the server should sample frames: the client-side twin of `videodag.v1.RunOptions`."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from google.protobuf import duration_pb2

from videodag.v1 import run_pb2
from videodag_client._errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class RunOptions:
    """Frame sampling for one run; the defaults process every frame of the whole video.

    The server applies the time window first, then the stride (counted from the window's
    first frame), then `max_frames`: stride 5 with max_frames 3 processes frames 0, 5, 10.
    Values are checked by the server (negative or reversed ones are INVALID_ARGUMENT), so
    that there is one source of truth for what is allowed.
    """

    frame_stride: int = 1
    """Process every Nth frame; 0 or 1 means every frame."""
    max_frames: int = 0
    """The most frames processed, counted after the stride; 0 means no limit."""
    start_seconds: float | None = None
    """Start of the window, inclusive; None means the first frame."""
    end_seconds: float | None = None
    """End of the window, exclusive; None means the last frame."""

    def to_proto(self, config_path: str = "config.") -> run_pb2.RunOptions:
        """The options as sent; None leaves a field at its default. A value its protobuf field
        cannot hold (a stride beyond 32 bits, a NaN) cannot be sent at all: `InvalidArgument`
        names its field, located at `config_path` (where the request holds its RunConfig), as
        the server names the others. A value of the wrong type raises TypeError."""
        options = run_pb2.RunOptions()
        for name, field in (("frame_stride", "frame_stride"), ("max_frames", "max_frames"),
                            ("start_seconds", "start_offset"), ("end_seconds", "end_offset")):
            value = getattr(self, name)
            if value is None:  # unset: the field's default
                continue
            refuse_bool(name, value)
            try:
                if name in ("frame_stride", "max_frames"):
                    setattr(options, field, value)
                else:
                    getattr(options, field).CopyFrom(_duration(value))
            except (ValueError, OverflowError):  # a TypeError (a str, a float stride) is the caller's bug: raised
                raise unsendable(name, f"{config_path}options.{field}", value) from None
        return options


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    # Whole seconds are counted as Python ints: numpy's fixed-width ones would overflow when
    # multiplied, and a wrapped value would be sent without a word.
    if isinstance(seconds, numbers.Integral):
        nanoseconds = int(seconds) * 1_000_000_000
    else:
        nanoseconds = round(float(seconds) * 1_000_000_000)
        if nanoseconds == 0 and seconds != 0:
            # Under a nanosecond, away from zero: -1e-10 s was sent as 0 and taken (the CLI refuses
            # it), and an end of 1e-10 s was refused as "after the start (0.0 s), got 0.0".
            nanoseconds = 1 if seconds > 0 else -1
    # Negative values are sent as they are: the server owns validation and names the field.
    duration.FromNanoseconds(nanoseconds)
    return duration


def refuse_bool(name: str, value: object) -> None:
    """A bool where a number goes is the caller's bug, raised as TypeError on every protobuf the
    client admits: protobuf 5 would send True as 1, later releases raise. numpy's bool too (an
    element of a mask), told by its type's name: the client does not need numpy."""
    kind = type(value)
    if isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")):
        raise TypeError(f"{name} must be a number, not {value!r}")


def unsendable(name: str, field: str, value: object) -> InvalidArgument:
    """The error for a value its protobuf field cannot hold, raised before the call as the server
    would refuse it: INVALID_OPTIONS, naming the field."""
    finite = not isinstance(value, float) or math.isfinite(value)
    problem = f"{value!r} cannot be sent as {field}: {'out of its range' if finite else 'not a finite number'}"
    return InvalidArgument(f"invalid {name}: {problem}", reason="INVALID_OPTIONS",
                           field_violations=[FieldViolation(field, problem)])
