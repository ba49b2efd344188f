"""Which of a detector's candidate boxes a frame reports, chosen alike by every detector, and the
parameters that choose them (`score_threshold`, `iou_threshold`, `max_detections`), declared here
once so that each detector states them in the same words and range.

The detectors' parameters promise two things OpenCV's NMS does not do. `score_threshold` is
the "smallest score kept", but OpenCV keeps only scores strictly above its threshold; so the
threshold is applied here, a score equal to it kept, before OpenCV sees the boxes.
`max_detections` keeps "at most this many boxes per frame, best first": the best of what
non-maximum suppression leaves. OpenCV's `top_k` is no such cap: it keeps the best k
candidates *before* suppression, so near-duplicates of the best object fill it and other
objects vanish (three candidates of one object and two other objects, capped at two, give one
box). Suppression therefore runs uncapped and the cap applies to what it keeps. Apart from the
plugins, so that the yolo, ssdlite and hog detectors cannot drift from each other in how they
choose, nor in what their parameters promise. Each detector keeps its own defaults.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from videodag_service.dag import Param
from videodag_service.plugins.detections import LARGEST_OPENCV_COUNT


def score_threshold_param(default: float, *, minimum: float = 0, note: str = "") -> Param:
    """`score_threshold`: a detection scoring under it is dropped, one equal to it kept. `note` says what
    a detector's scores mean, and why its `minimum`, if it has one above 0."""
    return Param("score_threshold", float, default, "smallest detection score kept" + (f"; {note}" if note else ""),
                 minimum=minimum, maximum=1)


def iou_threshold_param(default: float) -> Param:
    """`iou_threshold`: the overlap past which non-maximum suppression drops the weaker box."""
    return Param("iou_threshold", float, default,
                 "boxes overlapping a better one of the same class by more than this IoU are dropped",
                 minimum=0, minimum_inclusive=False, maximum=1)


def max_detections_param(default: int) -> Param:
    """`max_detections`: how many of the boxes suppression keeps a frame reports."""
    return Param("max_detections", int, default, "at most this many boxes per frame, best first",
                 minimum=0, maximum=LARGEST_OPENCV_COUNT)


def scoring_enough(scores: npt.NDArray[np.float32], score_threshold: float) -> npt.NDArray[np.bool_]:
    """Which scores pass `score_threshold`, one equal to it included: for a detector to leave the
    rest out before it does per-box work (mapping to frame pixels) on thousands of candidates.

    The threshold is compared in the scores' own precision (NumPy casts a Python float to
    float32 here), so a score that prints as 0.3 passes a threshold of 0.3."""
    return scores >= score_threshold


def select_best_boxes(
    xyxy: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int | None = None,
    class_ids: npt.NDArray[np.integer] | None = None,
) -> npt.NDArray[np.intp]:
    """Indices of the boxes a frame reports, best score first.

    `xyxy` are (N, 4) boxes x1, y1, x2, y2 as they will be reported; a box without area is never
    kept, nor one scoring under `score_threshold`. A box overlapping a better-scoring one (of its
    class, when `class_ids` are given) by more than `iou_threshold` is dropped, then the best
    `max_detections` of the rest are kept (all of them when it is None). Equal scores keep the
    candidates' order.
    """
    scoring = np.flatnonzero(scoring_enough(scores, score_threshold))
    boxes = xyxy[scoring]
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    eligible = scoring[(widths > 0) & (heights > 0)]
    wanted = eligible.size if max_detections is None else min(max_detections, eligible.size)
    if wanted <= 0:
        return np.zeros((0,), dtype=np.intp)
    ranked = eligible[np.argsort(-scores[eligible], kind="stable")]
    corners = xyxy[ranked].astype(np.float64)
    xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    classes = None if class_ids is None else class_ids[ranked].astype(np.int64)
    # Greedy suppression decides each candidate from the better ones alone, so the boxes it keeps
    # among the best n candidates are the first of those it keeps among all of them. The best
    # `wanted` alone cost what OpenCV's top_k costs, and are enough when few are duplicates; else
    # every candidate is compared once (growing the prefix step by step would cost a crowded
    # frame, short of the cap, five passes).
    if wanted < ranked.size:
        kept = _suppress(xywh[:wanted], None if classes is None else classes[:wanted], iou_threshold)
        if kept.size >= wanted:
            return ranked[kept]
    kept = _suppress(xywh, classes, iou_threshold)
    return ranked[kept[:wanted]]


def _suppress(
    xywh: npt.NDArray[np.float64], class_ids: npt.NDArray[np.int64] | None, iou_threshold: float
) -> npt.NDArray[np.intp]:
    """Positions of the boxes greedy NMS keeps, in order, for `xywh` sorted best first.

    OpenCV is handed each box's rank rather than its score: it keeps only scores strictly above
    the threshold it is given (and refuses one below 0), so ranks counting down to 1 and a
    threshold of 0 make it keep every candidate and visit them in the order given.
    """
    boxes = xywh.tolist()
    ranks = list(range(len(boxes), 0, -1))
    # Lists, not arrays: OpenCV's binding reads an (N, 4) array row by row, several times slower.
    if class_ids is None:
        kept = cv2.dnn.NMSBoxes(boxes, ranks, 0.0, iou_threshold)
    else:
        kept = cv2.dnn.NMSBoxesBatched(boxes, ranks, class_ids.tolist(), 0.0, iou_threshold)
    return np.sort(np.asarray(kept, dtype=np.intp).reshape(-1))
