"""ByteTrack: multi-object tracking by associating every detection box (Zhang et al., ECCV 2022).

One `ByteTracker` follows the objects of one video; call `update` once per frame, in order.
Per frame it:

1. predicts every confirmed and lost track one frame ahead with the Kalman filter;
2. matches high-score detections (>= track_high_thresh) to those tracks by 1 - IoU
   (times the detection score when `fuse_score`), within `match_thresh`;
3. matches low-score detections (track_low_thresh < score < track_high_thresh) to the
   tracks still unmatched that were tracked last frame, within 0.5 (the "byte" step: an
   occluded object's weak box keeps its track alive instead of being thrown away);
   tracked tracks still unmatched become lost;
4. matches the high-score detections left over to tracks born last frame (unconfirmed),
   within 0.7; unconfirmed tracks still unmatched are dropped;
5. starts a track from each high-score detection still unmatched with score >= new_track_thresh;
6. drops lost tracks unseen for more than track_buffer * frame_rate / 30 frames, and of a
   tracked and a lost track overlapping with IoU > 0.85 keeps the older one.

It reports the confirmed tracks updated in this frame. Differences from the reference
`yolox/tracker/byte_tracker.py`, on purpose:
- ids are counted per tracker from 1, never process-wide, so runs never share ids;
- no list of removed tracks is kept (it only grew), and a lost track is dropped in the frame
  it expires, where the reference's list order lets it be matched for one frame more;
- degenerate boxes (non-finite, or zero width or height) are ignored: they would divide by
  zero in the aspect ratio and poison the filter;
- `per_label=True` lets a track match only detections of its own label (the reference
  tracks all labels together, which stays the default: the latest matched label wins).
Like the reference, a track born after the first frame gets its id at birth but is shown
only once confirmed by a second detection, so ids of unconfirmed false positives are skipped.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from videodag_service.plugins.bytetrack.config import ByteTrackConfig
from videodag_service.plugins.bytetrack.kalman import KalmanFilterXYAH, xyah_to_xyxy, xyxy_to_xyah
from videodag_service.plugins.bytetrack.matching import fuse_score, iou_matrix, linear_assignment
from videodag_service.plugins.detections import Detections

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

# Fixed thresholds of the reference (as 1 - IoU costs).
LOW_SCORE_MATCH_THRESH = 0.5
DUPLICATE_IOU = 0.85


class TrackState(enum.Enum):
    TRACKED = "tracked"
    LOST = "lost"
    REMOVED = "removed"


class _Track:
    """One followed object: its filter state and what the last matched detection said."""

    __slots__ = ("confirmed", "covariance", "label", "last_frame", "mean", "score", "start_frame",
                 "state", "track_id")

    def __init__(self, track_id: int, mean: FloatArray, covariance: FloatArray, score: float, label: str,
                 frame: int, confirmed: bool) -> None:
        self.track_id = track_id
        self.mean = mean
        self.covariance = covariance
        self.score = score
        self.label = label
        self.start_frame = frame
        self.last_frame = frame
        self.state = TrackState.TRACKED
        self.confirmed = confirmed

    @property
    def xyxy(self) -> FloatArray:
        return xyah_to_xyxy(self.mean[:4])


class ByteTracker:
    """Follows objects across the frames of one video; not thread-safe, one per run."""

    def __init__(self, config: ByteTrackConfig | None = None) -> None:
        self._config = config or ByteTrackConfig()
        self._kalman = KalmanFilterXYAH()
        self._frame = 0
        self._next_id = 1
        self._tracked: list[_Track] = []
        self._lost: list[_Track] = []

    @property
    def config(self) -> ByteTrackConfig:
        return self._config

    def update(self, detections: Detections) -> Detections:
        """Take one frame's detections; return its confirmed tracks, ordered by track id.

        Boxes are the Kalman-corrected states (as the reference reports), kept within the
        frame when the detections know its size (a state moving with a walker can run past
        the edge the detector's box stopped at); scores and labels are those of the detection
        each track matched in this frame; `texts` are not carried.
        """
        config = self._config
        self._frame += 1
        frame = self._frame
        boxes = detections.xyxy.astype(np.float64)
        sizes = boxes[:, 2:] - boxes[:, :2]
        usable = np.all(np.isfinite(boxes), axis=1) & np.all(sizes > 0, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            measurements = xyxy_to_xyah(boxes).reshape(-1, 4)
        scores = detections.scores.astype(np.float64)
        high = np.flatnonzero(usable & (scores >= config.track_high_thresh))
        middle = (scores > config.track_low_thresh) & (scores < config.track_high_thresh)
        low = np.flatnonzero(usable & middle)

        unconfirmed = [track for track in self._tracked if not track.confirmed]
        pool = _union([track for track in self._tracked if track.confirmed], self._lost)
        self._predict(pool)

        updated: list[_Track] = []
        newly_lost: list[_Track] = []

        # First association: high-score boxes with tracked and lost tracks.
        cost = self._cost(pool, detections, high, fused=config.fuse_score)
        first = linear_assignment(cost, config.match_thresh)
        for row, column in first.matches:
            self._correct(pool[row], detections, measurements, int(high[column]))
            updated.append(pool[row])

        # Second association: low-score boxes only with tracks that were being followed.
        remaining = [pool[row] for row in first.unmatched_rows if pool[row].state is TrackState.TRACKED]
        cost = self._cost(remaining, detections, low, fused=False)
        second = linear_assignment(cost, LOW_SCORE_MATCH_THRESH)
        for row, column in second.matches:
            self._correct(remaining[row], detections, measurements, int(low[column]))
            updated.append(remaining[row])
        for row in second.unmatched_rows:
            remaining[row].state = TrackState.LOST
            newly_lost.append(remaining[row])

        # Tracks born last frame get one chance at the high-score boxes left over.
        leftover = high[first.unmatched_columns]
        cost = self._cost(unconfirmed, detections, leftover, fused=config.fuse_score)
        third = linear_assignment(cost, config.confirm_match_thresh)
        for row, column in third.matches:
            self._correct(unconfirmed[row], detections, measurements, int(leftover[column]))
            updated.append(unconfirmed[row])
        for row in third.unmatched_rows:
            unconfirmed[row].state = TrackState.REMOVED

        for column in third.unmatched_columns:
            index = int(leftover[column])
            if scores[index] >= config.new_track_thresh:
                updated.append(self._start(detections, measurements, index))

        for track in self._lost:
            if track.state is TrackState.LOST and frame - track.last_frame > config.max_frames_lost:
                track.state = TrackState.REMOVED

        tracked = _union([t for t in self._tracked if t.state is TrackState.TRACKED], updated)
        tracked_ids = {track.track_id for track in tracked}
        lost = [t for t in self._lost if t.track_id not in tracked_ids and t.state is TrackState.LOST]
        lost = _union(lost, newly_lost)
        self._tracked, self._lost = self._without_duplicates(tracked, lost)
        return self._report([track for track in self._tracked if track.confirmed], detections.frame_size)

    def _predict(self, tracks: Sequence[_Track]) -> None:
        if not tracks:
            return
        means = np.stack([track.mean for track in tracks])
        covariances = np.stack([track.covariance for track in tracks])
        # A lost track keeps drifting with its velocity but stops growing or shrinking.
        not_tracked = np.array([track.state is not TrackState.TRACKED for track in tracks])
        means[not_tracked, 7] = 0.0
        means, covariances = self._kalman.predict(means, covariances)
        for track, mean, covariance in zip(tracks, means, covariances, strict=True):
            track.mean, track.covariance = mean, covariance

    def _cost(self, tracks: Sequence[_Track], detections: Detections, columns: IndexArray,
              *, fused: bool) -> FloatArray:
        """1 - IoU between track predictions and the detections at `columns`, +inf where not allowed."""
        track_boxes = np.array([track.xyxy for track in tracks]).reshape(-1, 4)
        cost = 1.0 - iou_matrix(track_boxes, detections.xyxy[columns])
        if fused and cost.size:
            cost = fuse_score(cost, detections.scores[columns])
        if self._config.per_label and cost.size:
            labels = np.array([detections.labels[i] for i in columns], dtype=object)
            same = np.array([[track.label == label for label in labels] for track in tracks])
            cost = np.where(same, cost, np.inf)
        return cost

    def _correct(self, track: _Track, detections: Detections, measurements: FloatArray, index: int) -> None:
        """Fold a matched detection into a track; a lost track found again keeps its id."""
        track.mean, track.covariance = self._kalman.update(track.mean, track.covariance, measurements[index])
        track.score = float(detections.scores[index])
        track.label = detections.labels[index]
        track.last_frame = self._frame
        track.state = TrackState.TRACKED
        track.confirmed = True

    def _start(self, detections: Detections, measurements: FloatArray, index: int) -> _Track:
        mean, covariance = self._kalman.initiate(measurements[index])
        track = _Track(
            track_id=self._next_id,
            mean=mean,
            covariance=covariance,
            score=float(detections.scores[index]),
            label=detections.labels[index],
            frame=self._frame,
            # On the very first frame there is nothing to confirm against, so tracks show at once.
            confirmed=self._frame == 1,
        )
        self._next_id += 1
        return track

    def _without_duplicates(
        self, tracked: list[_Track], lost: list[_Track]
    ) -> tuple[list[_Track], list[_Track]]:
        """Of a tracked and a lost track covering the same object, keep the one followed longer."""
        if not tracked or not lost:
            return tracked, lost
        overlap = iou_matrix(np.array([t.xyxy for t in tracked]), np.array([t.xyxy for t in lost]))
        drop_tracked: set[int] = set()
        drop_lost: set[int] = set()
        for i, j in zip(*np.nonzero(overlap > DUPLICATE_IOU), strict=True):
            if self._config.per_label and tracked[i].label != lost[j].label:
                continue
            age_tracked = tracked[i].last_frame - tracked[i].start_frame
            age_lost = lost[j].last_frame - lost[j].start_frame
            if age_tracked > age_lost:
                drop_lost.add(int(j))
            else:
                drop_tracked.add(int(i))
        return (
            [t for i, t in enumerate(tracked) if i not in drop_tracked],
            [t for j, t in enumerate(lost) if j not in drop_lost],
        )

    @staticmethod
    def _report(tracks: Iterable[_Track], frame_size: tuple[int, int] | None) -> Detections:
        shown = sorted(tracks, key=lambda track: track.track_id)
        xyxy = np.array([track.xyxy for track in shown], dtype=np.float32).reshape(-1, 4)
        if frame_size is not None:
            width, height = frame_size
            xyxy = np.clip(xyxy, 0.0, np.array([width, height, width, height], dtype=np.float32))
        return Detections(
            xyxy=xyxy,
            scores=np.array([track.score for track in shown], dtype=np.float32),
            labels=tuple(track.label for track in shown),
            track_ids=np.array([track.track_id for track in shown], dtype=np.int64),
            frame_size=frame_size,
        )


def _union(first: Iterable[_Track], second: Iterable[_Track]) -> list[_Track]:
    """Both lists in order, each track once."""
    seen: set[int] = set()
    merged: list[_Track] = []
    for track in (*first, *second):
        if track.track_id not in seen:
            seen.add(track.track_id)
            merged.append(track)
    return merged
