"""Costs between tracks and detections, and the thresholded assignment that pairs them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def iou_matrix(boxes_a: npt.ArrayLike, boxes_b: npt.ArrayLike) -> FloatArray:
    """Intersection over union of every corner box in `boxes_a` (N, 4) with every one in `boxes_b` (M, 4).

    Continuous coordinates (no +1 pixel on widths, unlike the reference's cython_bbox).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, 0.0)
    return iou


def fuse_score(cost: FloatArray, detection_scores: npt.ArrayLike) -> FloatArray:
    """Turn an IoU cost into 1 - IoU * score, so a confident detection wins a contested track."""
    similarity = (1.0 - cost) * np.asarray(detection_scores, dtype=np.float64)[None, :]
    return 1.0 - similarity


@dataclass(frozen=True)
class Assignment:
    """Pairs (row, column) whose cost is within the threshold, and the rows and columns left alone."""

    matches: IndexArray
    unmatched_rows: IndexArray
    unmatched_columns: IndexArray


def linear_assignment(cost: FloatArray, threshold: float) -> Assignment:
    """The minimum-cost one-to-one pairing of rows and columns that uses no pair above `threshold`.

    Every row and column may also stay unmatched at a price of threshold / 2 each (the
    `cost_limit` of lapjv the reference calls). Solving that extended problem, instead of
    dropping over-threshold pairs after an unconstrained solve, keeps the optimiser from
    spending a good pair to avoid a bad one that would be discarded anyway. Forbidden
    pairs may carry +inf.
    """
    rows, columns = cost.shape
    if rows == 0 or columns == 0:
        return Assignment(
            matches=np.zeros((0, 2), dtype=np.intp),
            unmatched_rows=np.arange(rows, dtype=np.intp),
            unmatched_columns=np.arange(columns, dtype=np.intp),
        )
    size = rows + columns
    extended = np.full((size, size), threshold / 2.0)
    extended[:rows, :columns] = cost
    extended[rows:, columns:] = 0.0
    row_index, column_index = linear_sum_assignment(extended)
    real = (row_index < rows) & (column_index < columns)
    row_index, column_index = row_index[real], column_index[real]
    # Ties at exactly threshold / 2 + threshold / 2 could go either way in the solver; the reference keeps <=.
    within = cost[row_index, column_index] <= threshold
    matches = np.stack([row_index[within], column_index[within]], axis=1).astype(np.intp)
    return Assignment(
        matches=matches,
        unmatched_rows=np.setdiff1d(np.arange(rows), matches[:, 0]).astype(np.intp),
        unmatched_columns=np.setdiff1d(np.arange(columns), matches[:, 1]).astype(np.intp),
    )
