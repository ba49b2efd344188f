"""Server limits on the videos it accepts, checked before any frame is decoded.

Header values are only declarations: a file can claim 10 frames and hold a million.
`check_frame` is therefore also applied to every frame the decoder delivers, so a lying
header cannot make a run decode more than the limits allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from videodag_service.errors import ErrorDetails, VideoTooLarge
from videodag_service.video.info import VideoInfo

# Containers keep times in milliseconds or finer: a video of exactly the limit is within it.
_TIME_SLACK_SECONDS = 0.001


@dataclass(frozen=True)
class VideoLimits:
    """The largest video a run accepts; None means unlimited on that axis."""

    max_width: int | None = None
    max_height: int | None = None
    max_frames_total: int | None = None
    max_duration_seconds: float | None = None

    def check_info(self, info: VideoInfo) -> None:
        """Raise VideoTooLarge when the declared facts of a video are over a limit."""
        if self.max_width is not None and info.width > self.max_width:
            _refuse("width", self.max_width, info.width,
                    f"frame width {info.width} px is over the limit of {self.max_width} px")
        if self.max_height is not None and info.height > self.max_height:
            _refuse("height", self.max_height, info.height,
                    f"frame height {info.height} px is over the limit of {self.max_height} px")
        # An estimated count is no declaration: the frames are counted as they are decoded.
        if (self.max_frames_total is not None and not info.frame_count_is_estimate
                and info.frame_count > self.max_frames_total):
            _refuse(
                "frame_count", self.max_frames_total, info.frame_count,
                f"the video declares {info.frame_count} frames, over the limit of {self.max_frames_total}",
            )
        if self.max_duration_seconds is not None and info.duration_seconds > self.max_duration_seconds:
            _refuse(
                "duration", self.max_duration_seconds, round(info.duration_seconds, 3),
                f"the video declares {info.duration_seconds:.3f} s, "
                f"over the limit of {self.max_duration_seconds:g} s",
            )

    def check_frame(self, frame_index: int, seconds: float, fps: float) -> None:
        """Raise VideoTooLarge when the decoder delivers a frame beyond the limits.

        `seconds` is when the frame is presented. The video lasts at least until that frame
        ends, one frame period at the declared rate later: at a constant rate that is
        (index + 1) / fps, and at a variable rate it follows the frames' own times, so a
        header declaring a rate far above the real one cannot stretch the limit.
        """
        frames_seen = frame_index + 1
        if self.max_frames_total is not None and frames_seen > self.max_frames_total:
            _refuse("frame_count", self.max_frames_total, frames_seen,
                    f"the video has more than {self.max_frames_total} frames, the limit")
        max_duration = self.max_duration_seconds
        if max_duration is not None:
            lasts = seconds + (1.0 / fps if fps > 0 else 0.0)
            if lasts > max_duration + _TIME_SLACK_SECONDS:
                _refuse("duration", max_duration, round(lasts, 3),
                        f"the video lasts more than {max_duration:g} s, the limit")


def _refuse(limit: str, maximum: float, found: float, message: str) -> None:
    """The refusal, with the limit crossed, its value and the value found (so far, while decoding)."""
    metadata = {"limit": limit, "maximum": _plain_number(maximum), "found": _plain_number(found)}
    raise VideoTooLarge(f"video too large: {message}", ErrorDetails(metadata=metadata))


def _plain_number(value: float) -> str:
    """A number as a client parses it back: whole numbers as integers (never 1e+06), others to the millisecond."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0")
