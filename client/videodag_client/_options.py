"""How the server should sample frames: the client-side twin of `videodag.v1.RunOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import duration_pb2

from videodag.v1 import run_pb2


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

    def to_proto(self) -> run_pb2.RunOptions:
        options = run_pb2.RunOptions(frame_stride=self.frame_stride, max_frames=self.max_frames)
        if self.start_seconds is not None:
            options.start_offset.CopyFrom(_duration(self.start_seconds))
        if self.end_seconds is not None:
            options.end_offset.CopyFrom(_duration(self.end_seconds))
        return options


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    # Negative values are sent as they are: the server owns validation and names the field.
    duration.FromNanoseconds(round(seconds * 1_000_000_000))
    return duration
