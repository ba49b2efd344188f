"""A constant-velocity Kalman filter over boxes in (cx, cy, aspect, height) space.

This is the motion model of ByteTrack (inherited from SORT/DeepSORT): the state is
(cx, cy, a, h, vcx, vcy, va, vh) with a = width / height, one step is one frame, and the
box itself is the measurement. Noise scales with the box height, so the same weights suit
a small far-away pedestrian and a near one; the aspect ratio gets a fixed, tiny noise
because an object's width/height ratio barely changes from frame to frame.

Only numpy: importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

STATE_SIZE = 8
MEASUREMENT_SIZE = 4

# The reference weights: position noise 1/20 of the height, velocity noise 1/160 of it.
STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160

# Fixed standard deviations of the aspect ratio (not scaled by height).
_ASPECT_STD_INITIAL_POSITION = 1e-2
_ASPECT_STD_INITIAL_VELOCITY = 1e-5
_ASPECT_STD_MEASUREMENT = 1e-1


def xyxy_to_xyah(xyxy: npt.ArrayLike) -> FloatArray:
    """Corner boxes (..., 4) to (cx, cy, width / height, height)."""
    boxes = np.asarray(xyxy, dtype=np.float64)
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return np.stack(
        [boxes[..., 0] + width / 2, boxes[..., 1] + height / 2, width / height, height], axis=-1
    )


def xyah_to_xyxy(xyah: npt.ArrayLike) -> FloatArray:
    """(cx, cy, width / height, height) boxes (..., 4) back to corners."""
    boxes = np.asarray(xyah, dtype=np.float64)
    height = boxes[..., 3]
    width = boxes[..., 2] * height
    x1 = boxes[..., 0] - width / 2
    y1 = boxes[..., 1] - height / 2
    return np.stack([x1, y1, x1 + width, y1 + height], axis=-1)


class KalmanFilterXYAH:
    """Predicts and corrects box states; holds no per-track state, so one filter serves all tracks."""

    def __init__(
        self,
        std_weight_position: float = STD_WEIGHT_POSITION,
        std_weight_velocity: float = STD_WEIGHT_VELOCITY,
    ) -> None:
        self._std_weight_position = std_weight_position
        self._std_weight_velocity = std_weight_velocity
        # x' = x + v, with one frame as the time step.
        self._motion = np.eye(STATE_SIZE)
        self._motion[:MEASUREMENT_SIZE, MEASUREMENT_SIZE:] = np.eye(MEASUREMENT_SIZE)
        # The measurement is the position half of the state.
        self._observation = np.eye(MEASUREMENT_SIZE, STATE_SIZE)

    def initiate(self, measurement: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Start a state from one (cx, cy, a, h) box: velocities unknown, so zero with wide variance."""
        position = np.asarray(measurement, dtype=np.float64)
        mean = np.concatenate([position, np.zeros(MEASUREMENT_SIZE)])
        height = position[3]
        position_std = 2 * self._std_weight_position * height
        velocity_std = 10 * self._std_weight_velocity * height
        std = np.array(
            [
                position_std, position_std, _ASPECT_STD_INITIAL_POSITION, position_std,
                velocity_std, velocity_std, _ASPECT_STD_INITIAL_VELOCITY, velocity_std,
            ]
        )
        return mean, np.diag(np.square(std))

    def predict(self, means: FloatArray, covariances: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Advance N states (N, 8) and covariances (N, 8, 8) by one frame, all at once."""
        heights = means[:, 3]
        position_std = self._std_weight_position * heights
        velocity_std = self._std_weight_velocity * heights
        std = np.stack(
            [
                position_std, position_std, np.full_like(heights, _ASPECT_STD_INITIAL_POSITION), position_std,
                velocity_std, velocity_std, np.full_like(heights, _ASPECT_STD_INITIAL_VELOCITY), velocity_std,
            ],
            axis=1,
        )
        process_noise = np.zeros((len(means), STATE_SIZE, STATE_SIZE))
        diagonal = np.arange(STATE_SIZE)
        process_noise[:, diagonal, diagonal] = np.square(std)
        predicted_means = means @ self._motion.T
        predicted_covariances = self._motion @ covariances @ self._motion.T + process_noise
        return predicted_means, predicted_covariances

    def project(self, mean: FloatArray, covariance: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The state's distribution in measurement space, measurement noise included."""
        height = mean[3]
        std = np.array(
            [
                self._std_weight_position * height,
                self._std_weight_position * height,
                _ASPECT_STD_MEASUREMENT,
                self._std_weight_position * height,
            ]
        )
        projected_mean = self._observation @ mean
        projected_covariance = self._observation @ covariance @ self._observation.T + np.diag(np.square(std))
        return projected_mean, projected_covariance

    def update(
        self, mean: FloatArray, covariance: FloatArray, measurement: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Correct one state with a measured (cx, cy, a, h) box."""
        projected_mean, projected_covariance = self.project(mean, covariance)
        # K = P H^T S^-1, solved rather than inverted; S is a small symmetric positive-definite matrix.
        gain = np.linalg.solve(projected_covariance, (covariance @ self._observation.T).T).T
        innovation = np.asarray(measurement, dtype=np.float64) - projected_mean
        new_mean = mean + gain @ innovation
        new_covariance = covariance - gain @ projected_covariance @ gain.T
        return new_mean, new_covariance
