"""What a streaming run reports, in order: `VideoOpened`, then `FrameProcessed` per sampled
frame, then `RunFinished` once the run has been closed successfully. An error ends the
stream by raising instead of `RunFinished`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from videodag_service.video.info import VideoInfo
from videodag_service.video.runs import NodeTimingLike


@dataclass(frozen=True)
class RunStats:
    """The facts of a finished run.

    decode_seconds: time spent seeking, decoding and sampling frames.
    wall_seconds: the whole run, from opening the file to closing the pipeline run.
    node_timings: from the DAG service's run, in pipeline order; empty when it has none.
    ended_early: the video ended before the frame count it declares (`OpenedVideo.ended_early`).
    frames_in_video: the frames it held, read to its end (`OpenedVideo.frames_in_video`);
        None when the run stopped first.
    frames_unreadable: frames it could not decode and decoded past (`OpenedVideo.frames_unreadable`).
    """

    pipeline_id: str
    frames_processed: int
    decode_seconds: float
    wall_seconds: float
    node_timings: tuple[NodeTimingLike, ...] = ()
    ended_early: bool = False
    frames_in_video: int | None = None
    frames_unreadable: int = 0


@dataclass(frozen=True)
class VideoOpened:
    """The video was opened, probed and accepted by the limits; no frame decoded yet."""

    info: VideoInfo


@dataclass(frozen=True)
class FrameProcessed:
    """The pipeline's result for one sampled frame; `result` is the caller's own copy."""

    frame_index: int
    timestamp_seconds: float
    result: dict[str, Any]


@dataclass(frozen=True)
class RunFinished:
    """The run ended successfully; always the last event."""

    summary: RunStats


RunEvent = VideoOpened | FrameProcessed | RunFinished
