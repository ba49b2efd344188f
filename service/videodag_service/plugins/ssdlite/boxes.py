"""From the predictors' raw outputs to scored person boxes in frame pixels.

Mirrors the frozen graph's `Postprocessor`: encodings are decoded with the Faster R-CNN box
coder (scale factors 10, 10, 5, 5, read from its `Decode` constants), class logits go
through a sigmoid (its `convert_scores` node), and the background column is dropped.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from videodag_service.plugins.box_selection import select_best_boxes

# (ty, tx, th, tw) divisors of the box coder the model was trained with.
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)


def decode_boxes(
    encodings: npt.NDArray[np.float32],
    anchors: npt.NDArray[np.float32],
    scales: tuple[float, float, float, float] = BOX_CODER_SCALES,
) -> npt.NDArray[np.float32]:
    """(N, 4) encodings (ty, tx, th, tw) against (N, 4) anchors (yc, xc, h, w) -> normalised x1, y1, x2, y2."""
    ty, tx, th, tw = (encodings[:, i] / scales[i] for i in range(4))
    y_center = ty * anchors[:, 2] + anchors[:, 0]
    x_center = tx * anchors[:, 3] + anchors[:, 1]
    # Clamped so that a wild logit cannot overflow exp() into inf boxes.
    half_height = np.exp(np.minimum(th, 10.0)) * anchors[:, 2] / 2
    half_width = np.exp(np.minimum(tw, 10.0)) * anchors[:, 3] / 2
    return np.stack(
        [x_center - half_width, y_center - half_height, x_center + half_width, y_center + half_height], axis=1
    ).astype(np.float32)


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def select_boxes(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    *,
    score_threshold: float,
    iou_threshold: float,
    min_box_area: float,
    max_detections: int,
) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept after the score and area filters, NMS and the cap on their count,
    best score first.

    `boxes` are x1, y1, x2, y2 in pixels; `min_box_area` is in square pixels.
    """
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    large_enough = np.flatnonzero(areas >= min_box_area)
    kept = select_best_boxes(
        boxes[large_enough], scores[large_enough], score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    return large_enough[kept]
