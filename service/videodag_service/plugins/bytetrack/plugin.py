"""The `bytetrack` plugin: one stateful `track` tool, one tracker per run.

The tracker module (and scipy with it) is imported on the first `open`, so listing
plugins and checking pipeline files stay cheap; each `open` builds a fresh tracker, so two
runs never share ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from videodag_service.dag import Param, Plugin, Port, Tool, ToolInstance
from videodag_service.plugins.bytetrack.config import LARGEST_FRAME_RATE, LARGEST_TRACK_BUFFER, ByteTrackConfig
from videodag_service.plugins.detections import Detections

if TYPE_CHECKING:
    from videodag_service.plugins.bytetrack.tracker import ByteTracker

TRACK_PARAMS: tuple[Param, ...] = (
    Param("track_high_thresh", float, 0.5,
          "detections at or above this score take part in the first association", minimum=0, maximum=1),
    Param("track_low_thresh", float, 0.1,
          "detections above this score and below track_high_thresh can only extend existing tracks; "
          "at most track_high_thresh", minimum=0, maximum=1),
    Param("new_track_thresh", float, 0.6,
          "an unmatched detection starts a track only at or above this score", minimum=0, maximum=1),
    Param("match_thresh", float, 0.8, "largest 1 - IoU cost (score-fused) accepted in the first association",
          minimum=0, maximum=1),
    Param("confirm_match_thresh", float, 0.7,
          "largest 1 - IoU cost (score-fused) that confirms a track started on the previous frame; until "
          "confirmed a track is not reported, so raise it with match_thresh for objects that move far "
          "between the frames the tracker sees", minimum=0, maximum=1),
    Param("track_buffer", int, 30,
          "frames the tracker sees (at frame_rate 30) a lost track is kept and can come back with its id; "
          "a run's frame_stride makes that longer in video time", minimum=0, maximum=LARGEST_TRACK_BUFFER),
    Param("frame_rate", int, 30, "frames per second the tracker sees; track_buffer is scaled by frame_rate / 30",
          minimum=1, maximum=LARGEST_FRAME_RATE),
    Param("fuse_score", bool, True, "weigh IoU by the detection score in the high-score associations"),
    Param("per_label", bool, False,
          "match a track only with detections of its own label; by default all labels are tracked together"),
)


class _TrackingInstance:
    """Feeds each frame's detections to the run's own tracker."""

    def __init__(self, tracker: ByteTracker) -> None:
        self._tracker: ByteTracker | None = tracker

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._tracker is None:
            raise RuntimeError("the tracker of this run is closed")
        detections = inputs["detections"]
        if not isinstance(detections, Detections):
            raise TypeError(f"input 'detections' must be Detections, got {type(detections).__name__}")
        return {"tracks": self._tracker.update(detections)}

    def close(self) -> None:
        self._tracker = None


def _check_params(params: Mapping[str, Any]) -> None:
    """The configuration `open` would build, checked when the pipeline loads (without scipy)."""
    ByteTrackConfig(**params)


def _open_tracker(params: Mapping[str, Any]) -> ToolInstance:
    from videodag_service.plugins.bytetrack.tracker import ByteTracker

    return _TrackingInstance(ByteTracker(ByteTrackConfig(**params)))


PLUGIN = Plugin(
    name="bytetrack",
    description="Multi-object tracking with ByteTrack: stable ids for detections across frames.",
    tools=(
        Tool(
            name="track",
            description=(
                "Give each detected object a track id that stays the same across frames. Boxes are the "
                "Kalman-filtered track states; scores and labels come from the matched detection."
            ),
            inputs=(Port("detections", "Detections of this frame", kind="detections"),),
            outputs=(
                Port(
                    "tracks",
                    "Detections of the confirmed tracks seen in this frame, with track_ids",
                    kind="detections",
                ),
            ),
            open=_open_tracker,
            params=TRACK_PARAMS,
            stateful=True,
            check_params=_check_params,
        ),
    ),
)
