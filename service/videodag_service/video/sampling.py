"""Which frames of a video a run processes: the sampling options and the frame window.

Frames are chosen in a fixed order: the time window first, then the stride counted from
the window's first frame, then `max_frames`. Stride 5 with `max_frames` 3 processes
frames 0, 5 and 10. Nothing here touches a file; the reader applies the plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

from videodag_service.errors import FieldViolation, InvalidOptions

# Window edges are converted to frame indices as `seconds * fps`; products such as
# 0.3 * 10 come out as 3.0000000000000004, which must still mean frame 3.
_INDEX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SamplingOptions:
    """How a run samples frames; every knob explicit, unset means no sampling on that axis.

    frame_stride: process every Nth frame of the window; 0 is normalised to 1.
    max_frames: the most frames processed, counted after the stride; 0 is normalised to None
        (no limit).
    start_seconds: start of the time window, inclusive; None means the first frame.
    end_seconds: end of the time window, exclusive; None means the last frame.

    Invalid values raise `InvalidOptions` on construction, so an instance is always valid.
    """

    frame_stride: int = 1
    max_frames: int | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None

    def __post_init__(self) -> None:
        violations = _violations(self)
        if violations:
            raise InvalidOptions(violations)
        if self.frame_stride == 0:
            object.__setattr__(self, "frame_stride", 1)
        if self.max_frames == 0:
            object.__setattr__(self, "max_frames", None)

    @property
    def has_time_window(self) -> bool:
        return self.start_seconds is not None or self.end_seconds is not None

    def takes_the_same_frames_as(self, other: SamplingOptions) -> bool:
        """Whether both sample a video alike: a window starting at 0 s is no window's start."""
        def frames(options: SamplingOptions) -> tuple[int, int | None, float, float | None]:
            return options.frame_stride, options.max_frames, options.start_seconds or 0.0, options.end_seconds

        return frames(self) == frames(other)

    def overridden_by(self, overrides: SamplingOptions | Mapping[str, Any] | None) -> SamplingOptions:
        """Combine these defaults with per-call options.

        A `SamplingOptions` is a complete value and replaces the defaults. A mapping overrides
        only the keys it holds with a value other than None; unknown keys are invalid.
        """
        if overrides is None:
            return self
        if isinstance(overrides, SamplingOptions):
            return overrides
        if isinstance(overrides, Mapping):
            known = asdict(self)
            unknown = sorted(str(key) for key in overrides if key not in known)
            if unknown:
                description = f"unknown option; known options: {', '.join(known)}"
                raise InvalidOptions([FieldViolation(key, description) for key in unknown])
            known.update({key: value for key, value in overrides.items() if value is not None})
            return SamplingOptions(**known)
        raise TypeError(f"options must be SamplingOptions, a mapping or None, not {type(overrides).__name__}")


def _violations(options: SamplingOptions) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for name in ("frame_stride", "max_frames"):
        value = getattr(options, name)
        if value is None and name == "max_frames":
            continue
        if isinstance(value, bool) or not isinstance(value, Integral):
            violations.append(FieldViolation(name, f"must be an integer, got {value!r}"))
        elif value < 0:
            violations.append(FieldViolation(name, f"must not be negative, got {value}"))
    for name in ("start_seconds", "end_seconds"):
        value = getattr(options, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            violations.append(FieldViolation(name, f"must be a finite number of seconds, got {value!r}"))
        elif value < 0:
            violations.append(FieldViolation(name, f"must not be negative, got {value}"))
    offsets_valid = not any(v.field in ("start_seconds", "end_seconds") for v in violations)
    if offsets_valid and options.end_seconds is not None:
        start = options.start_seconds or 0.0
        if options.end_seconds <= start:
            description = f"must be after the start ({start} s), got {options.end_seconds}"
            violations.append(FieldViolation("end_seconds", description))
    return violations


@dataclass(frozen=True)
class FrameWindow:
    """The frames a run takes: those presented from `start_seconds` (inclusive) to
    `end_seconds` (exclusive; None: to the last frame the decoder delivers), then every
    `frame_stride`th of them, then at most `max_frames`.

    Frames are chosen by their presentation time, so a video with a variable frame rate
    gets the frames of the window asked for. `first_index` and `stop_index` say where the
    window lies if frame i is presented at i / fps, as the container declares: decoding
    seeks near `first_index` (and checks that the file keeps that rate there), and
    `stop_index` only estimates how many frames a run will take. The container's frame
    count is never trusted as an end, since it is an estimate for some formats.
    """

    start_seconds: float = 0.0
    end_seconds: float | None = None
    frame_stride: int = 1
    max_frames: int | None = None
    first_index: int = 0
    stop_index: int | None = None

    def is_before(self, seconds: float) -> bool:
        """Whether a frame presented at `seconds` comes before the window."""
        return _nanoseconds(seconds) < _nanoseconds(self.start_seconds)

    def is_past_end(self, seconds: float) -> bool:
        """Whether a frame presented at `seconds` comes after the window."""
        return self.end_seconds is not None and _nanoseconds(seconds) >= _nanoseconds(self.end_seconds)


def _nanoseconds(seconds: float) -> int:
    """Times are compared in whole nanoseconds, the resolution of the Durations a window is
    given in: a presentation time computed as 3 * 0.1 (or from a time base) is still the 0.3 s
    it means, and a window 1 ns wide around a frame's time still holds that frame."""
    return round(seconds * 1e9)


def plan_window(options: SamplingOptions, fps: float) -> FrameWindow:
    """Turn sampling options into a window, and say where it lies at the declared `fps`.

    A time window needs a known frame rate; `fps` <= 0 with a window raises ValueError
    (the caller reports the video as unreadable).
    """
    first_index = 0
    stop_index: int | None = None
    if options.has_time_window:
        if not fps > 0:
            raise ValueError("the video's frame rate is unknown, so a time window cannot be applied")
        if options.start_seconds is not None:
            first_index = _first_index_at_or_after(options.start_seconds, fps)
        if options.end_seconds is not None:
            stop_index = _first_index_at_or_after(options.end_seconds, fps)
    return FrameWindow(
        options.start_seconds or 0.0, options.end_seconds, options.frame_stride, options.max_frames,
        first_index, stop_index,
    )


def _first_index_at_or_after(seconds: float, fps: float) -> int:
    return max(0, math.ceil(seconds * fps - _INDEX_TOLERANCE))
