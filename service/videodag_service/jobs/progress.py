"""How many frames a job will process, for its progress: an estimate made when the video opens."""

from __future__ import annotations

import math

from videodag_service.video import SamplingOptions, VideoInfo
from videodag_service.video.sampling import plan_window


def expected_frame_count(info: VideoInfo, sampling: SamplingOptions) -> int:
    """Frames the sampling keeps out of the container's declared frame count; 0 when unknown.

    The declared count is an estimate for some formats, so this is one too: progress may end
    a little below or above it, never the results.
    """
    if info.frame_count <= 0:
        return 0
    try:
        window = plan_window(sampling, info.fps)
    except ValueError:
        return 0
    stop = info.frame_count if window.stop_index is None else min(window.stop_index, info.frame_count)
    count = max(0, math.ceil((stop - window.first_index) / window.frame_stride))
    if window.max_frames is not None:
        count = min(count, window.max_frames)
    return count
