"""The `motion.foreground_blobs` tool on synthetic scenes: a textured, noisy static background
and solid rectangles moving across it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from fakes.fake_plugins import declared_problems
from videodag_service.dag.plugin import ToolInstance
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.motion import PLUGIN

WIDTH, HEIGHT = 640, 360


def _open(**overrides: Any) -> ToolInstance:
    tool = PLUGIN.tool("foreground_blobs")
    assert tool is not None and tool.stateful
    params = {param.name: param.default for param in tool.params} | overrides
    return tool.open(params)


class Scene:
    """A fixed textured background with fresh sensor noise on every frame."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        texture = self._rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.background = cv2.GaussianBlur(texture, (0, 0), 3)

    def frame(self) -> np.ndarray:
        noise = self._rng.integers(-4, 5, self.background.shape)
        return np.clip(self.background.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    def frames(self, count: int) -> Iterator[np.ndarray]:
        for _ in range(count):
            yield self.frame()

    def with_rectangle(
        self, box: tuple[int, int, int, int], bgr: tuple[int, int, int] = (30, 200, 60)
    ) -> np.ndarray:
        frame = self.frame()
        x1, y1, x2, y2 = box
        frame[y1:y2, x1:x2] = bgr
        return frame


def _iou(box: np.ndarray, other: tuple[int, int, int, int]) -> float:
    x1, y1 = max(box[0], other[0]), max(box[1], other[1])
    x2, y2 = min(box[2], other[2]), min(box[3], other[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return float(inter / (area - inter))


def _warm_up(instance: ToolInstance, scene: Scene, count: int = 30) -> None:
    for frame in scene.frames(count):
        instance.process({"image": frame})


def _run_moving_rectangle(
    instance: ToolInstance, scene: Scene, steps: int = 12, size: tuple[int, int] = (80, 100)
) -> tuple[dict[str, Any], tuple[int, int, int, int]]:
    """Moves a rectangle 20 px a frame to the right; returns the last output and box."""
    width, height = size
    output: dict[str, Any] = {}
    box = (0, 0, 0, 0)
    for step in range(steps):
        box = (40 + 20 * step, 120, 40 + 20 * step + width, 120 + height)
        output = dict(instance.process({"image": scene.with_rectangle(box)}))
    return output, box


def test_moving_rectangle_gives_one_blob_where_it_is() -> None:
    scene = Scene(seed=1)
    instance = _open()
    _warm_up(instance, scene)

    output, box = _run_moving_rectangle(instance, scene)

    blobs = output["blobs"]
    assert isinstance(blobs, Detections)
    assert len(blobs) == 1
    assert blobs.labels == ("motion",)
    assert _iou(blobs.xyxy[0], box) > 0.9
    assert blobs.scores[0] > 0.9
    rectangle_share = (box[2] - box[0]) * (box[3] - box[1]) / (WIDTH * HEIGHT)
    assert output["foreground_ratio"] == pytest.approx(rectangle_share, rel=0.2)


@pytest.mark.parametrize(
    "box",
    [(100, 2, 140, 42), (597, 100, 637, 140), (0, 150, 40, 190), (600, 320, 640, 360), (300, 357, 340, 360)],
)
def test_a_mover_near_or_at_an_edge_is_boxed_where_it_is(box: tuple[int, int, int, int]) -> None:
    """Near an edge a box is not stretched to it, and one touching an edge is not cut from it."""
    scene = Scene(seed=3)
    instance = _open(min_area=50)
    _warm_up(instance, scene)

    blobs = instance.process({"image": scene.with_rectangle(box)})["blobs"]

    assert [list(map(float, found)) for found in blobs.xyxy] == [list(map(float, box))]


def test_static_scene_has_no_blobs_after_warm_up() -> None:
    scene = Scene(seed=2)
    instance = _open()
    _warm_up(instance, scene, count=10)

    outputs = [instance.process({"image": frame}) for frame in scene.frames(20)]

    assert all(len(output["blobs"]) == 0 for output in outputs)
    assert max(output["foreground_ratio"] for output in outputs) < 0.001


def test_first_frame_only_seeds_the_model() -> None:
    output = _open().process({"image": Scene(seed=3).with_rectangle((10, 10, 200, 200))})

    assert len(output["blobs"]) == 0
    assert output["foreground_ratio"] == 0.0


def test_instances_do_not_share_a_background_model() -> None:
    first_scene, second_scene = Scene(seed=4), Scene(seed=5)
    first = _open()
    _warm_up(first, first_scene)

    second = _open()
    second_outputs = [second.process({"image": frame}) for frame in second_scene.frames(5)]
    first_output = first.process({"image": first_scene.frame()})

    assert all(len(output["blobs"]) == 0 for output in second_outputs)
    # With one shared model the second run would have replaced the first scene's background,
    # so the first scene would now read as foreground everywhere.
    assert len(first_output["blobs"]) == 0
    assert first_output["foreground_ratio"] < 0.001


def test_downscale_maps_boxes_back_to_full_frame_pixels() -> None:
    scene = Scene(seed=6)
    instance = _open(downscale=2)
    _warm_up(instance, scene)

    output, box = _run_moving_rectangle(instance, scene)

    assert len(output["blobs"]) == 1
    assert _iou(output["blobs"].xyxy[0], box) > 0.85


def test_min_area_drops_small_movers() -> None:
    scene = Scene(seed=7)
    strict, lenient = _open(min_area=200), _open(min_area=50)
    for instance in (strict, lenient):
        _warm_up(instance, scene, count=10)

    strict_output, _ = _run_moving_rectangle(strict, scene, size=(10, 10))
    lenient_output, box = _run_moving_rectangle(lenient, scene, size=(10, 10))

    assert len(strict_output["blobs"]) == 0
    assert len(lenient_output["blobs"]) == 1
    assert _iou(lenient_output["blobs"].xyxy[0], box) > 0.5


def _blobs_of_a_parked_square(side: int, **overrides: Any) -> Detections:
    """The blobs of a side x side square appearing on a frozen background (learning_rate 0)."""
    scene = Scene(seed=11)
    instance = _open(learning_rate=0.0, **overrides)
    _warm_up(instance, scene, count=5)
    blobs = instance.process({"image": scene.with_rectangle((300, 150, 300 + side, 150 + side))})["blobs"]
    assert isinstance(blobs, Detections)
    return blobs


@pytest.mark.parametrize(("side", "kept"), [(13, False), (14, False), (15, True), (17, True)])
def test_min_area_counts_the_pixels_of_a_blob(side: int, kept: bool) -> None:
    """At min_area 200 a 15 x 15 blob (225 pixels) is kept and a 14 x 14 one (196) is not: the
    outline's polygon area (14 x 14 = 196 for the first) is not what min_area counts."""
    assert len(_blobs_of_a_parked_square(side, min_area=200)) == int(kept)


@pytest.mark.parametrize("downscale", [1, 2])
def test_a_blob_of_exactly_min_area_pixels_is_kept_and_its_score_counts_them(downscale: int) -> None:
    found = _blobs_of_a_parked_square(40, min_area=0, downscale=downscale)
    assert len(found) == 1
    box = found.xyxy[0]
    pixels = round(float(found.scores[0]) * float(box[2] - box[0]) * float(box[3] - box[1]))
    assert 1400 <= pixels <= 1600  # 40 x 40, less what cleaning the mask trims from its corners

    assert len(_blobs_of_a_parked_square(40, min_area=pixels, downscale=downscale)) == 1
    assert len(_blobs_of_a_parked_square(40, min_area=pixels + downscale**2, downscale=downscale)) == 0


def test_shadow_detection_ignores_a_darkened_patch() -> None:
    scene = Scene(seed=8)
    scene.background = cv2.add(scene.background, np.full_like(scene.background, 60))  # room to darken
    outputs = {}
    for detect_shadows in (False, True):
        instance = _open(detect_shadows=detect_shadows)
        _warm_up(instance, scene)
        for step in range(5):
            frame = scene.frame()
            x = 20 + 30 * step
            frame[80:160, x : x + 60] = (frame[80:160, x : x + 60] * 0.65).astype(np.uint8)
            outputs[detect_shadows] = instance.process({"image": frame})

    assert len(outputs[False]["blobs"]) == 1
    assert len(outputs[True]["blobs"]) == 0


def test_learning_rate_sets_how_fast_a_parked_object_fades() -> None:
    scene = Scene(seed=9)
    parked = (100, 80, 160, 160)
    blob_counts = {}
    for learning_rate in (0.0, 0.3):
        instance = _open(learning_rate=learning_rate)
        _warm_up(instance, scene, count=10)
        blob_counts[learning_rate] = [
            len(instance.process({"image": scene.with_rectangle(parked, (200, 30, 30))})["blobs"])
            for _ in range(6)
        ]

    assert blob_counts[0.0] == [1] * 6  # frozen background: the object never becomes background
    assert blob_counts[0.3][0] == 1 and blob_counts[0.3][-1] == 0


@pytest.mark.parametrize(
    "overrides", [{"downscale": 0}, {"history": 0}, {"var_threshold": 0.0}, {"min_area": -1}]
)
def test_declares_the_range_of_each_parameter(overrides: dict[str, Any]) -> None:
    tool = PLUGIN.tool("foreground_blobs")
    assert tool is not None
    assert len(declared_problems(tool, **overrides)) == 1


def test_a_negative_min_area_is_refused_naming_its_range() -> None:
    tool = PLUGIN.tool("foreground_blobs")
    assert tool is not None
    (problem,) = declared_problems(tool, min_area=-50)
    assert problem.startswith("parameter 'min_area' must be >= 0, got -50: smallest blob kept")


@pytest.mark.parametrize("learning_rate", [1.0, -0.5])
def test_rejects_a_learning_rate_mog2_cannot_use(learning_rate: float) -> None:
    with pytest.raises(ValueError, match=r"learning_rate must be -1 \(automatic\) or at least 0 and below 1"):
        _open(learning_rate=learning_rate)
