"""The Kalman filter and the assignment under ByteTrack, checked against their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodag_service.plugins.bytetrack.kalman import (
    STD_WEIGHT_POSITION,
    STD_WEIGHT_VELOCITY,
    KalmanFilterXYAH,
    xyah_to_xyxy,
    xyxy_to_xyah,
)
from videodag_service.plugins.bytetrack.matching import fuse_score, iou_matrix, linear_assignment


def test_box_conversions_are_inverse() -> None:
    boxes = np.array([[10.0, 20.0, 50.0, 120.0], [0.5, 0.25, 3.0, 9.0]])
    xyah = xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah[0], [30.0, 70.0, 0.4, 100.0])
    np.testing.assert_allclose(xyah_to_xyxy(xyah), boxes)


def test_initiate_uses_height_scaled_uncertainty_and_zero_velocity() -> None:
    mean, covariance = KalmanFilterXYAH().initiate([30.0, 70.0, 0.4, 100.0])
    np.testing.assert_array_equal(mean, [30.0, 70.0, 0.4, 100.0, 0, 0, 0, 0])
    position_std = 2 * STD_WEIGHT_POSITION * 100.0
    velocity_std = 10 * STD_WEIGHT_VELOCITY * 100.0
    expected_std = [position_std, position_std, 1e-2, position_std, velocity_std, velocity_std, 1e-5, velocity_std]
    np.testing.assert_allclose(np.sqrt(np.diag(covariance)), expected_std)
    assert np.count_nonzero(covariance - np.diag(np.diag(covariance))) == 0


def test_batched_predict_equals_one_by_one() -> None:
    kalman = KalmanFilterXYAH()
    states = [kalman.initiate([10.0 * i, 5.0 * i, 0.5, 40.0 + 10 * i]) for i in range(1, 4)]
    means = np.stack([mean for mean, _ in states])
    means[:, 4:6] = [[1.0, -2.0], [3.0, 0.5], [0.0, 4.0]]
    covariances = np.stack([covariance for _, covariance in states])
    batch_means, batch_covariances = kalman.predict(means, covariances)
    for i in range(3):
        single_mean, single_covariance = kalman.predict(means[i : i + 1], covariances[i : i + 1])
        np.testing.assert_allclose(batch_means[i], single_mean[0])
        np.testing.assert_allclose(batch_covariances[i], single_covariance[0])
    # Constant velocity: the position moves by exactly the velocity.
    np.testing.assert_allclose(batch_means[:, :4], means[:, :4] + means[:, 4:])
    # Prediction only adds uncertainty.
    assert np.all(np.trace(batch_covariances, axis1=1, axis2=2) > np.trace(covariances, axis1=1, axis2=2))


def test_update_pulls_the_state_toward_the_measurement_and_shrinks_uncertainty() -> None:
    kalman = KalmanFilterXYAH()
    mean, covariance = kalman.initiate([100.0, 100.0, 0.5, 80.0])
    means, covariances = kalman.predict(mean[None], covariance[None])
    measurement = np.array([110.0, 96.0, 0.5, 84.0])
    new_mean, new_covariance = kalman.update(means[0], covariances[0], measurement)
    for axis in (0, 1, 3):
        assert min(means[0][axis], measurement[axis]) < new_mean[axis] < max(means[0][axis], measurement[axis])
    assert np.trace(new_covariance) < np.trace(covariances[0])
    np.testing.assert_allclose(new_covariance, new_covariance.T, atol=1e-9)


def test_filter_learns_a_constant_velocity() -> None:
    kalman = KalmanFilterXYAH()
    velocity = np.array([4.0, -1.5, 0.0, 0.5])
    start = np.array([50.0, 300.0, 0.45, 90.0])
    mean, covariance = kalman.initiate(start)
    for step in range(1, 40):
        means, covariances = kalman.predict(mean[None], covariance[None])
        mean, covariance = kalman.update(means[0], covariances[0], start + step * velocity)
    np.testing.assert_allclose(mean[4:], velocity, atol=0.05)
    predicted, _ = kalman.predict(mean[None], covariance[None])
    np.testing.assert_allclose(predicted[0][:4], start + 40 * velocity, atol=0.1)


def test_iou_matrix() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    np.testing.assert_allclose(
        iou_matrix(a, b), [[1.0, 50.0 / 150.0, 0.0], [0.0, 0.0, 0.0]]
    )
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_fuse_score_weighs_similarity_by_detection_score() -> None:
    cost = np.array([[0.2, 0.6]])
    np.testing.assert_allclose(fuse_score(cost, [0.5, 1.0]), [[1 - 0.8 * 0.5, 1 - 0.4 * 1.0]])


def _best_thresholded_total(cost: np.ndarray, threshold: float) -> float:
    """Brute force: the least total over partial matchings using only pairs <= threshold,
    each unmatched row or column costing threshold / 2."""
    rows, columns = cost.shape
    best = (rows + columns) * threshold / 2
    for size in range(1, min(rows, columns) + 1):
        for chosen_rows in itertools.combinations(range(rows), size):
            for chosen_columns in itertools.permutations(range(columns), size):
                pairs = cost[list(chosen_rows), list(chosen_columns)]
                if np.all(pairs <= threshold):
                    total = pairs.sum() + (rows + columns - 2 * size) * threshold / 2
                    best = min(best, total)
    return best


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(0, 4),
    columns=st.integers(0, 4),
    threshold=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_assignment_is_optimal_under_the_threshold(rows: int, columns: int, threshold: float,
                                                          seed: int) -> None:
    cost = np.random.default_rng(seed).uniform(0.0, 1.2, size=(rows, columns))
    result = linear_assignment(cost, threshold)
    matched_rows, matched_columns = result.matches[:, 0], result.matches[:, 1]
    assert len(set(matched_rows)) == len(matched_rows) and len(set(matched_columns)) == len(matched_columns)
    assert np.all(cost[matched_rows, matched_columns] <= threshold)
    assert sorted([*matched_rows, *result.unmatched_rows]) == list(range(rows))
    assert sorted([*matched_columns, *result.unmatched_columns]) == list(range(columns))
    total = cost[matched_rows, matched_columns].sum() + (
        len(result.unmatched_rows) + len(result.unmatched_columns)
    ) * threshold / 2
    assert total == pytest.approx(_best_thresholded_total(cost, threshold))


def test_linear_assignment_does_not_spend_a_good_pair_on_a_rejected_one() -> None:
    # Unconstrained, the cheapest full matching is (0,1)+(1,0) = 0.8, and (0,1) is over the
    # threshold; dropping it afterwards would leave (1,0) at 0.2 instead of the better (0,0) at 0.1.
    cost = np.array([[0.1, 0.6], [0.2, 5.0]])
    result = linear_assignment(cost, 0.5)
    assert result.matches.tolist() == [[0, 0]]
    assert result.unmatched_rows.tolist() == [1]
    assert result.unmatched_columns.tolist() == [1]


def test_linear_assignment_never_uses_forbidden_pairs() -> None:
    cost = np.array([[np.inf, 0.1], [0.2, np.inf]])
    assert sorted(linear_assignment(cost, 0.8).matches.tolist()) == [[0, 1], [1, 0]]
    assert linear_assignment(np.full((2, 2), np.inf), 0.8).matches.shape == (0, 2)
