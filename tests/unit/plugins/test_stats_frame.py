"""The `stats.frame_stats` tool: brightness equals the grayscale mean, sizes, cost."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pytest

from videodag_service.dag.plugin import ToolInstance
from videodag_service.plugins.stats import PLUGIN


def _open(**overrides: Any) -> ToolInstance:
    tool = PLUGIN.tool("frame_stats")
    assert tool is not None
    params = {param.name: param.default for param in tool.params} | overrides
    return tool.open(params)


def _stats(image: np.ndarray, **overrides: Any) -> Mapping[str, Any]:
    return _open(**overrides).process({"image": image})["stats"]


@pytest.fixture(scope="module")
def random_frame() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (720, 1280, 3), dtype=np.uint8)


def test_brightness_is_the_mean_of_the_grayscale_frame(random_frame: np.ndarray) -> None:
    stats = _stats(random_frame)

    gray_mean = float(cv2.cvtColor(random_frame, cv2.COLOR_BGR2GRAY).mean())
    exact = float(
        random_frame.reshape(-1, 3).astype(np.float64).mean(axis=0) @ np.array([0.114, 0.587, 0.299])
    )
    assert stats["mean_brightness"] == pytest.approx(exact, abs=0.006)
    # cvtColor rounds each pixel to an integer, so it may differ by up to half a level.
    assert stats["mean_brightness"] == pytest.approx(gray_mean, abs=0.5)


@pytest.mark.parametrize(
    ("bgr", "expected"),
    [
        ((0, 0, 0), 0.0),
        ((255, 255, 255), 255.0),
        ((0, 0, 255), 76.24),
        ((255, 0, 0), 29.07),
        ((0, 255, 0), 149.69),
    ],
)
def test_uniform_colours_weigh_like_bt601(bgr: tuple[int, int, int], expected: float) -> None:
    image = np.full((48, 64, 3), bgr, dtype=np.uint8)

    assert _stats(image)["mean_brightness"] == pytest.approx(expected, abs=0.011)


def test_reports_width_and_height_of_a_non_square_frame(random_frame: np.ndarray) -> None:
    stats = _stats(random_frame[:100, :300])

    assert (stats["width"], stats["height"]) == (300, 100)


def test_channel_means_only_when_asked(random_frame: np.ndarray) -> None:
    plain = _stats(random_frame)
    detailed = _stats(random_frame, include_channels=True)

    assert "channel_means" not in plain
    expected = random_frame.reshape(-1, 3).astype(np.float64).mean(axis=0)
    means = detailed["channel_means"]
    assert [means["b"], means["g"], means["r"]] == pytest.approx(list(expected), abs=0.006)


def test_grayscale_frame_brightness_is_its_mean() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (10, 1))

    stats = _stats(gray, include_channels=True)

    assert stats["mean_brightness"] == pytest.approx(127.5)
    assert stats["channel_means"] == {"gray": pytest.approx(127.5)}


def test_result_is_plain_json(random_frame: np.ndarray) -> None:
    stats = _stats(random_frame, include_channels=True)

    assert json.loads(json.dumps(stats)) == stats
    assert type(stats["mean_brightness"]) is float and type(stats["width"]) is int


def test_rejects_images_that_are_not_frames() -> None:
    with pytest.raises(ValueError, match="shape"):
        _stats(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        _stats(np.zeros((0, 4, 3), dtype=np.uint8))
