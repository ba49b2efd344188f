"""The ssdlite plugin on the real sample clip, with the real model files.

Needs `python -m videodag_service.fetch_models` to have run (CI does it first); without the files
the tests fail with ModelFileMissing, whose message names that command.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes.fake_plugins import params_as_loaded
from videodag_service.dag import ToolInstance
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.models import MODEL_DIR_ENV, ModelFileMissing
from videodag_service.plugins.ssdlite import PLUGIN

SAMPLE_CLIP = Path(__file__).resolve().parents[3] / "samples" / "pedestrians_120.mp4"

# People in frame 0, boxed by hand (x1, y1, x2, y2) from a zoomed view of the frame.
FRAME_0_PEOPLE = [(254, 220, 283, 308), (500, 157, 529, 233), (640, 241, 684, 320)]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(SAMPLE_CLIP))
    decoded = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(frame)
    finally:
        capture.release()
    assert len(decoded) == 120
    return decoded


def opened(**params: object) -> ToolInstance:
    tool = PLUGIN.tool("detect_people")
    assert tool is not None
    return tool.open(params_as_loaded(tool, **params))


def detect(frame: np.ndarray, **params: object) -> Detections:
    instance = opened(**params)
    try:
        return instance.process({"image": frame})["detections"]
    finally:
        instance.close()


def iou(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize(("frame_index", "at_least"), [(0, 2), (60, 3), (119, 5)])
def test_finds_people_with_plausible_boxes(frames: list[np.ndarray], frame_index: int, at_least: int) -> None:
    detections = detect(frames[frame_index])

    assert len(detections) >= at_least
    assert set(detections.labels) == {"person"}
    assert np.all(detections.scores >= 0.4) and np.all(detections.scores <= 1.0)
    assert np.all(np.diff(detections.scores) <= 0), "best first"
    widths = detections.xyxy[:, 2] - detections.xyxy[:, 0]
    heights = detections.xyxy[:, 3] - detections.xyxy[:, 1]
    # People in this clip stand 35-130 px tall, upright: taller than wide.
    assert np.all((heights > 25) & (heights < 200)), heights
    assert np.all((heights / widths > 1.3) & (heights / widths < 5.0)), heights / widths
    assert np.all(detections.xyxy >= 0)
    assert np.all(detections.xyxy[:, [0, 2]] <= 768) and np.all(detections.xyxy[:, [1, 3]] <= 576)


def test_boxes_match_hand_labelled_people(frames: list[np.ndarray]) -> None:
    detections = detect(frames[0])

    matched = [max((iou(person, box) for box in detections.xyxy), default=0.0) for person in FRAME_0_PEOPLE]
    assert sum(overlap >= 0.5 for overlap in matched) >= 2, matched


def test_every_frame_of_the_clip_has_someone(frames: list[np.ndarray]) -> None:
    instance = opened()
    counts = [len(instance.process({"image": frame})["detections"]) for frame in frames]
    instance.close()

    assert min(counts) >= 1
    assert np.mean(counts) >= 3.0, counts


def test_empty_scene_gives_no_detections() -> None:
    grey = np.full((576, 768, 3), 128, dtype=np.uint8)
    assert len(detect(grey)) == 0


def test_boxes_follow_the_frame_size(frames: list[np.ndarray]) -> None:
    """Half-size input gives the same people at half the coordinates: boxes are mapped to frame pixels."""
    full = detect(frames[119])
    half_frame = cv2.resize(frames[119], (384, 288), interpolation=cv2.INTER_AREA)
    half = detect(half_frame)

    assert np.all(half.xyxy[:, [0, 2]] <= 384) and np.all(half.xyxy[:, [1, 3]] <= 288)
    assert len(half) >= 3
    # Every box found at half size is one of the full-size boxes, at half the coordinates.
    for box in half.xyxy:
        assert max(iou(box * 2, other) for other in full.xyxy) >= 0.6, box


def test_parameters_filter_the_boxes(frames: list[np.ndarray]) -> None:
    default = detect(frames[119])
    strict = detect(frames[119], score_threshold=0.9)
    big_only = detect(frames[119], min_box_area=2500.0)
    capped = detect(frames[119], max_detections=2)

    assert 0 < len(strict) < len(default)
    assert np.all(strict.scores >= 0.9)
    areas = (big_only.xyxy[:, 2] - big_only.xyxy[:, 0]) * (big_only.xyxy[:, 3] - big_only.xyxy[:, 1])
    assert 0 < len(big_only) < len(default) and np.all(areas >= 2500.0)
    assert len(capped) == 2
    np.testing.assert_allclose(capped.scores, default.scores[:2])


def test_a_person_scoring_exactly_the_threshold_is_kept(frames: list[np.ndarray]) -> None:
    loose = detect(frames[119], score_threshold=0.1)
    boundary = float(loose.scores[len(loose) // 2])

    at_boundary = detect(frames[119], score_threshold=boundary)

    assert boundary in at_boundary.scores.tolist()
    np.testing.assert_array_equal(at_boundary.xyxy, loose.xyxy[loose.scores >= loose.scores[len(loose) // 2]])


def test_concurrent_instances_detect_as_one_does(frames: list[np.ndarray]) -> None:
    chosen = frames[::12]
    expected = [detect(frame).xyxy for frame in chosen]
    results: dict[int, list[np.ndarray]] = {}

    def run(worker: int) -> None:
        instance = opened()
        results[worker] = [instance.process({"image": frame})["detections"].xyxy for frame in chosen]
        instance.close()

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == [0, 1, 2]
    for boxes in results.values():
        for got, want in zip(boxes, expected, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-3)


def test_open_instances_each_have_a_model_and_closed_ones_give_it_back_for_reuse() -> None:
    from videodag_service.plugins.ssdlite.model import idle_pedestrian_models

    tool = PLUGIN.tool("detect_people")
    first, second = tool.open(params_as_loaded(tool)), tool.open(params_as_loaded(tool))
    try:
        assert first._model is not None and second._model is not None  # type: ignore[attr-defined]
        assert first._model is not second._model  # type: ignore[attr-defined]
        lent = first._model  # type: ignore[attr-defined]
    finally:
        first.close()
    idle = idle_pedestrian_models()
    third = tool.open(params_as_loaded(tool))
    try:
        assert third._model is lent  # type: ignore[attr-defined]
        assert idle_pedestrian_models() == idle - 1
    finally:
        third.close()
        second.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.process({"image": np.zeros((10, 10, 3), dtype=np.uint8)})


def test_the_pool_keeps_only_so_many_idle_models(monkeypatch: pytest.MonkeyPatch) -> None:
    from videodag_service.plugins.ssdlite import model

    monkeypatch.setattr(model, "_idle_models", {})
    monkeypatch.setattr(model, "MAX_IDLE_MODELS", 2)
    tool = PLUGIN.tool("detect_people")
    instances = [tool.open(params_as_loaded(tool)) for _ in range(3)]
    for instance in instances:
        instance.close()
    assert model.idle_pedestrian_models() == 2


def test_rejects_a_frame_that_is_not_bgr() -> None:
    instance = opened()
    with pytest.raises(TypeError, match="uint8 BGR"):
        instance.process({"image": np.zeros((10, 10), dtype=np.uint8)})


def test_missing_model_names_the_fetch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))

    with pytest.raises(ModelFileMissing, match=r"python -m videodag_service\.fetch_models") as raised:
        opened()
    assert isinstance(raised.value, FileNotFoundError)
    assert str(tmp_path) in str(raised.value)


def test_a_missing_model_is_logged_when_a_pipeline_using_it_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The load goes on (other pipelines still serve), but the news comes at start, not at the first run."""
    from videodag_service.plugins.ssdlite.plugin import _warn_once_if_the_model_is_missing

    tool = PLUGIN.tool("detect_people")
    assert tool is not None and tool.check_params is not None
    defaults = {param.name: param.default for param in tool.params}
    _warn_once_if_the_model_is_missing.cache_clear()
    with caplog.at_level(logging.WARNING):  # the fetched models, as the other tests here use them
        tool.check_params(defaults)
    assert [record for record in caplog.records if record.levelno == logging.WARNING] == []

    _warn_once_if_the_model_is_missing.cache_clear()
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    with caplog.at_level(logging.WARNING):
        tool.check_params(defaults)
        tool.check_params(defaults)  # once a process: one line for many pipelines
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ssdlite.detect_people cannot run" in warnings[0] and str(tmp_path) in warnings[0]
    assert "python -m videodag_service.fetch_models" in warnings[0]
    _warn_once_if_the_model_is_missing.cache_clear()
