"""How detectors choose the boxes a frame reports: suppression first, then the cap on their count."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from videodag_service.plugins.box_selection import select_best_boxes


def _random_candidates(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters of overlapping boxes, as a detector's candidates come, with scores and classes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 400, (count, 2))
    centres[count // 2 :] = centres[: count - count // 2] + rng.normal(0, 4, (count - count // 2, 2))
    sizes = rng.uniform(5, 60, (count, 2))
    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.choice(np.linspace(0, 1, 21), count).astype(np.float32)  # ties included
    return xyxy, scores, rng.integers(0, 3, count)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 120),
    cap=st.integers(0, 130),
    by_class=st.booleans(),
)
def test_a_cap_keeps_the_first_boxes_of_the_uncapped_choice(seed: int, count: int, cap: int, by_class: bool) -> None:
    xyxy, scores, classes = _random_candidates(seed, count)
    class_ids = classes if by_class else None

    def choose(max_detections: int | None) -> list[int]:
        return select_best_boxes(
            xyxy, scores, score_threshold=0.2, iou_threshold=0.4, max_detections=max_detections, class_ids=class_ids
        ).tolist()

    uncapped = choose(None)
    assert choose(cap) == uncapped[:cap]
    assert np.all(np.diff(scores[uncapped]) <= 0), "best first"


def test_suppression_is_per_class_when_classes_are_given() -> None:
    xyxy = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)

    together = select_best_boxes(xyxy, scores, score_threshold=0.1, iou_threshold=0.5)
    per_class = select_best_boxes(
        xyxy, scores, score_threshold=0.1, iou_threshold=0.5, class_ids=np.array([0, 1, 0]), max_detections=5
    )

    assert together.tolist() == [0]
    assert per_class.tolist() == [0, 1]


def test_equal_scores_keep_the_candidates_order() -> None:
    xyxy = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [41, 0, 51, 10]], dtype=np.float32)
    scores = np.array([0.5, 0.7, 0.5, 0.5], dtype=np.float32)

    assert select_best_boxes(xyxy, scores, score_threshold=0.1, iou_threshold=0.5).tolist() == [1, 0, 2]


def test_boxes_without_area_are_never_kept() -> None:
    xyxy = np.array([[0, 0, 0, 10], [5, 5, 15, 5], [30, 30, 20, 40], [0, 0, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.9, 0.9, 0.5], dtype=np.float32)

    assert select_best_boxes(xyxy, scores, score_threshold=0.1, iou_threshold=0.5).tolist() == [3]
