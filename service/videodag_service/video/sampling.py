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
    if not violations and options.end_seconds is not None:
        start = options.start_seconds or 0.0
        if options.end_seconds <= start:
            description = f"must be after the start ({start} s), got {options.end_seconds}"
            violations.append(FieldViolation("end_seconds", description))
    return violations


@dataclass(frozen=True)
class FrameWindow:
    """The frame indices a run may touch: `first_index` inclusive, `stop_index` exclusive.

    `stop_index` None means up to the last frame the decoder delivers; the container's frame
    count is not trusted as an end because it is an estimate for some formats.
    """

    first_index: int = 0
    stop_index: int | None = None
    frame_stride: int = 1
    max_frames: int | None = None

    def is_sampled(self, frame_index: int) -> bool:
        """Whether the stride keeps this frame (frames before the window are never asked about)."""
        return (frame_index - self.first_index) % self.frame_stride == 0

    def is_past_end(self, frame_index: int) -> bool:
        return self.stop_index is not None and frame_index >= self.stop_index


def plan_window(options: SamplingOptions, fps: float) -> FrameWindow:
    """Turn sampling options into frame indices, with frame i presented at i / fps.

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
    return FrameWindow(first_index, stop_index, options.frame_stride, options.max_frames)


def _first_index_at_or_after(seconds: float, fps: float) -> int:
    return max(0, math.ceil(seconds * fps - _INDEX_TOLERANCE))
