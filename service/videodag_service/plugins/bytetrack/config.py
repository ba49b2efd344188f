"""The thresholds of one ByteTrack tracker, apart from the tracker itself.

They are checked when a pipeline file is loaded, and this module imports neither the
tracker nor scipy, so that check stays cheap for a server that may never track anything.
"""

from __future__ import annotations

from dataclasses import dataclass

# Buffers are expressed for 30 fps video and scaled to the actual rate.
REFERENCE_FRAME_RATE = 30.0
# The largest track_buffer and frame_rate a pipeline may give: far beyond any video (over two years
# of frames at 30 fps; a million frames a second, past high-speed cameras), and small enough that
# max_frames_lost, their product through a float, stays finite (about 7e13). Without them a value no
# one means (10**300) passed the load and failed the run on the first frame a track was lost.
LARGEST_TRACK_BUFFER = 2**31 - 1
LARGEST_FRAME_RATE = 1_000_000


@dataclass(frozen=True)
class ByteTrackConfig:
    """Thresholds of one tracker; the defaults are the reference's."""

    track_high_thresh: float = 0.5
    """Detections at or above this score take part in the first association."""
    track_low_thresh: float = 0.1
    """Detections above this score but below track_high_thresh only extend tracked tracks."""
    new_track_thresh: float = 0.6
    """An unmatched high-score detection starts a track only at or above this score."""
    match_thresh: float = 0.8
    """Largest 1 - IoU (score-fused) cost accepted in the first association."""
    confirm_match_thresh: float = 0.7
    """Largest 1 - IoU cost accepted when a track started on the previous frame meets its next
    detection, which confirms it. The reference fixes it at 0.7 (IoU 0.3): an object moving
    more than about half its width between the frames the tracker sees is then never
    confirmed, and never reported, unless it was there on the first frame."""
    track_buffer: int = 30
    """Frames, at 30 fps, a lost track is remembered and can be recovered with its id."""
    frame_rate: int = 30
    """Frames per second of the frames the tracker sees; scales track_buffer."""
    fuse_score: bool = True
    """Weigh IoU by the detection score in the high-score associations (the reference's non-MOT20 mode)."""
    per_label: bool = False
    """Match a track only with detections of its own label."""

    def __post_init__(self) -> None:
        # Each value's own range is declared with the tool's parameters and checked as a pipeline
        # loads; what is left is how two of them relate.
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(
                f"track_low_thresh ({self.track_low_thresh}) must not exceed "
                f"track_high_thresh ({self.track_high_thresh})"
            )

    @property
    def max_frames_lost(self) -> int:
        """How many frames in a row a track may miss and still be recovered."""
        return int(self.frame_rate / REFERENCE_FRAME_RATE * self.track_buffer)
