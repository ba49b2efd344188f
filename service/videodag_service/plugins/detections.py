"""`Detections`: the value detectors, trackers and OCR pass between pipeline nodes.

Boxes travel as one numpy array rather than a list of dicts so that trackers can work
vectorised; they become JSON only at the pipeline's outputs (`to_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

LARGEST_OPENCV_COUNT = 2**31 - 1
"""The largest count (boxes kept, frames remembered) OpenCV takes: it holds counts in a C int,
and a larger one would fail every frame instead of the pipeline's load."""


def _empty_boxes() -> npt.NDArray[np.float32]:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_scores() -> npt.NDArray[np.float32]:
    return np.zeros((0,), dtype=np.float32)



def frame_size_of(image: npt.NDArray[Any]) -> tuple[int, int]:
    """The (width, height) of an image array, as `Detections.frame_size` holds it."""
    return int(image.shape[1]), int(image.shape[0])

@dataclass(frozen=True)
class Detections:
    """N boxes found in one frame.

    xyxy: (N, 4) float32 pixel boxes [x1, y1, x2, y2].
    scores: (N,) float32 confidences in [0, 1].
    labels: N class names, such as "person" or "text".
    track_ids: (N,) int64 track ids, or None before tracking.
    texts: N recognised strings, or None when nothing was read.
    frame_size: (width, height) of the frame the boxes were found in, or None if not known.
        Not part of the JSON: it lets a box derived from these (a tracker's prediction) be
        kept within the frame, as the contract promises pixel boxes.
    """

    xyxy: npt.NDArray[np.float32] = field(default_factory=_empty_boxes)
    scores: npt.NDArray[np.float32] = field(default_factory=_empty_scores)
    labels: tuple[str, ...] = ()
    track_ids: npt.NDArray[np.int64] | None = None
    texts: tuple[str, ...] | None = None
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        count = len(self.xyxy)
        if self.xyxy.shape != (count, 4):
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        if len(self.scores) != count or len(self.labels) != count:
            raise ValueError("xyxy, scores and labels must have the same length")
        if self.track_ids is not None and len(self.track_ids) != count:
            raise ValueError("track_ids must have one id per box")
        if self.texts is not None and len(self.texts) != count:
            raise ValueError("texts must have one string per box")

    @classmethod
    def from_lists(
        cls,
        boxes: Sequence[Sequence[float]],
        scores: Sequence[float],
        labels: Sequence[str],
        track_ids: Sequence[int] | None = None,
        texts: Sequence[str] | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> Detections:
        """Build from plain Python sequences (handy in plugins and tests)."""
        return cls(
            xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            labels=tuple(labels),
            track_ids=None if track_ids is None else np.asarray(track_ids, dtype=np.int64).reshape(-1),
            texts=None if texts is None else tuple(texts),
            frame_size=frame_size,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def select(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Detections:
        """The detections at a boolean mask or index array, in that order."""
        indices = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.intp)
        return Detections(
            xyxy=self.xyxy[indices],
            scores=self.scores[indices],
            labels=tuple(self.labels[i] for i in indices),
            track_ids=None if self.track_ids is None else self.track_ids[indices],
            texts=None if self.texts is None else tuple(self.texts[i] for i in indices),
            frame_size=self.frame_size,
        )

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON object per box: box (rounded to 0.1 px), score, label, and track_id/text when known."""
        objects: list[dict[str, Any]] = []
        for i in range(len(self)):
            item: dict[str, Any] = {
                "box": [round(float(v), 1) for v in self.xyxy[i]],
                "score": round(float(self.scores[i]), 4),
                "label": self.labels[i],
            }
            if self.track_ids is not None:
                item["track_id"] = int(self.track_ids[i])
            if self.texts is not None:
                item["text"] = self.texts[i]
            objects.append(item)
        return objects
