"""Which frame a decoded picture is, from its time alone: how decoding goes on past damage.

Frames are numbered by counting them as they are decoded. A stretch the decoder cannot
decode (bytes overwritten in a copy, a bad sector) breaks the count: FFmpeg gives up on it
and decodes on, and how many frames it lost there is not said. Every player plays on; the
run can too, wherever a frame's time tells its index exactly:

- an MP4 or QuickTime file, by its sample table (`frame_times`): any spacing, B-frames;
- an AVI whose index has a frame in every slot (`avi_index.seeks_exactly`): frame i is
  presented at i / fps.

Elsewhere (Matroska, WebM, MPEG streams, raw streams) a time does not tell how many frames
came before it, and a run ends at the damage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# A hundredth of a frame period: an AVI's times are its frame numbers over the rate, exactly.
_EVEN_TOLERANCE = 0.01


class FrameNumbering(Protocol):
    """`FrameTimes`, or `EvenlySpaced`."""

    def index_at(self, seconds: float) -> int | None:
        """The index of the frame presented at `seconds`; None when no frame is."""

    def first_at_or_after(self, seconds: float) -> int:
        """The index of the first frame presented at `seconds` or later."""


@dataclass(frozen=True)
class EvenlySpaced:
    """Frame i presented at i / fps."""

    fps: float

    def index_at(self, seconds: float) -> int | None:
        position = seconds * self.fps
        index = round(position)
        return index if index >= 0 and abs(position - index) < _EVEN_TOLERANCE else None

    def first_at_or_after(self, seconds: float) -> int:
        return max(0, math.ceil(seconds * self.fps - _EVEN_TOLERANCE))
