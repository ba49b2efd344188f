"""Server limits on the videos it accepts, checked before any frame is decoded.

Header values are only declarations: a file can claim 10 frames and hold a million.
`check_frame` is therefore also applied to every frame the decoder delivers, so a lying
header cannot make a run decode more than the limits allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from videodag_service.errors import ErrorDetails, VideoTooLarge
from videodag_service.video.info import VideoInfo
from videodag_service.wording import plain_number

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
        self._check_frame_size(info.width, info.height)
        # An estimated count is no declaration, nor the duration made of it (FFmpeg takes the
        # longest stream's: a 2 s video with 6 s of sound "declares" 6 s): both are checked as
        # the frames are decoded instead, each by its presentation time.
        if (self.max_frames_total is not None and not info.frame_count_is_estimate
                and info.frame_count > self.max_frames_total):
            _refuse(
                "frame_count", self.max_frames_total, info.frame_count,
                f"the video declares {info.frame_count} frames, over the limit of {self.max_frames_total}",
            )
        if (self.max_duration_seconds is not None and not info.frame_count_is_estimate
                and info.duration_seconds > self.max_duration_seconds + _TIME_SLACK_SECONDS):
            _refuse(
                "duration", self.max_duration_seconds, round(info.duration_seconds, 3),
                f"the video declares {info.duration_seconds:.3f} s, "
                f"over the limit of {plain_number(self.max_duration_seconds)} s",
            )

    def _check_frame_size(self, width: int, height: int) -> None:
        """A frame fits when it fits the limit's width and height either way round: a phone's
        portrait video is as large as the same video held landscape (the same pixels, the same
        memory), and a limit written for 4K landscape must not refuse 4K portrait. With one side
        unlimited there is no box to turn: the other is checked as it stands."""
        max_width, max_height = self.max_width, self.max_height
        if max_width is None or max_height is None:
            if max_width is not None and width > max_width:
                _refuse("width", max_width, width, f"frame width {width} px is over the limit of {max_width} px")
            if max_height is not None and height > max_height:
                _refuse("height", max_height, height, f"frame height {height} px is over the limit of {max_height} px")
            return
        if (width <= max_width and height <= max_height) or (width <= max_height and height <= max_width):
            return
        either_way = f"(the limit is {max_width}x{max_height} px, either way round)"
        if width > max_width:
            _refuse("width", max_width, width, f"frame width {width} px is over the limit of {max_width} px "
                                                f"{either_way}")
        _refuse("height", max_height, height, f"frame height {height} px is over the limit of {max_height} px "
                                              f"{either_way}")

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
                        f"the video lasts more than {plain_number(max_duration)} s, the limit")


def _refuse(limit: str, maximum: float, found: float, message: str) -> None:
    """The refusal, with the limit crossed, its value and the value found (so far, while decoding)."""
    metadata = {"limit": limit, "maximum": plain_number(maximum), "found": plain_number(found)}
    raise VideoTooLarge(f"video too large: {message}", ErrorDetails(metadata=metadata))
