"""The hog plugin on frames of the real sample clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes.fake_plugins import declared_problems, params_as_loaded
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.hog import PLUGIN

SAMPLE_CLIP = Path(__file__).resolve().parents[3] / "samples" / "pedestrians_120.mp4"

# People boxed by hand (x1, y1, x2, y2) from zoomed views of the frames.
FRAME_0_PEOPLE = [(254, 220, 283, 308), (500, 157, 529, 233), (640, 241, 684, 320)]
# Three people about 65 px tall at the back of frame 119: too small for HOG's 128 px window.
FRAME_119_SMALL_PEOPLE = [(555, 131, 580, 196), (581, 140, 603, 200), (644, 130, 671, 204)]


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    capture = cv2.VideoCapture(str(SAMPLE_CLIP))
    wanted = {0, 119}
    found: dict[int, np.ndarray] = {}
    try:
        index = 0
        while len(found) < len(wanted):
            ok, frame = capture.read()
            assert ok, f"the clip ended before frame {max(wanted)}"
            if index in wanted:
                found[index] = frame
            index += 1
    finally:
        capture.release()
    return found


def detect(frame: np.ndarray, **params: object) -> Detections:
    tool = PLUGIN.tool("detect_people")
    assert tool is not None
    instance = tool.open(params_as_loaded(tool, **params))
    try:
        return instance.process({"image": frame})["detections"]
    finally:
        instance.close()


def covers(box: np.ndarray, person: tuple[int, int, int, int]) -> bool:
    """A HOG box frames a person: their centre inside it, and a height 0.8-1.8x theirs.

    HOG boxes are the 64x128 window scaled, with margin around the ~96 px person, so they
    run larger than a tight box and IoU alone would undersell them.
    """
    centre_x, centre_y = (person[0] + person[2]) / 2, (person[1] + person[3]) / 2
    inside = box[0] <= centre_x <= box[2] and box[1] <= centre_y <= box[3]
    height_ratio = (box[3] - box[1]) / (person[3] - person[1])
    return bool(inside and 0.8 <= height_ratio <= 1.8)


def matched(detections: Detections, people: list[tuple[int, int, int, int]]) -> int:
    return sum(any(covers(box, person) for box in detections.xyxy) for person in people)


def test_finds_the_people_of_frame_0(frames: dict[int, np.ndarray]) -> None:
    detections = detect(frames[0])

    assert len(detections) >= 1
    assert set(detections.labels) == {"person"}
    assert np.all((detections.scores >= 0.5) & (detections.scores <= 1.0))
    assert matched(detections, FRAME_0_PEOPLE) >= 2
    assert np.all(detections.xyxy >= 0)
    assert np.all(detections.xyxy[:, [0, 2]] <= 768) and np.all(detections.xyxy[:, [1, 3]] <= 576)


def test_upscaling_finds_people_too_small_for_the_window(frames: dict[int, np.ndarray]) -> None:
    native = detect(frames[119], upscale=1.0)
    enlarged = detect(frames[119], upscale=1.5)

    # Boxes come back in original pixels, so the hand labels match them directly.
    assert matched(enlarged, FRAME_119_SMALL_PEOPLE) >= 2
    assert matched(enlarged, FRAME_119_SMALL_PEOPLE) > matched(native, FRAME_119_SMALL_PEOPLE)


def test_score_threshold_and_nms(frames: dict[int, np.ndarray]) -> None:
    loose = detect(frames[0], score_threshold=0.5)
    strict = detect(frames[0], score_threshold=0.9)

    assert 0 < len(strict) < len(loose)
    assert np.all(strict.scores >= 0.9)
    for i in range(len(loose)):
        for j in range(i + 1, len(loose)):
            a, b = loose.xyxy[i], loose.xyxy[j]
            inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            assert inter / union <= 0.45


def test_a_score_threshold_under_the_svm_boundary_keeps_weaker_people(frames: dict[int, np.ndarray]) -> None:
    """Scores under 0.5 are windows OpenCV drops by default (margin under 0): asking for them finds them."""
    boundary = detect(frames[0], upscale=1.0, score_threshold=0.5)
    loose = detect(frames[0], upscale=1.0, score_threshold=0.2)

    assert len(loose) > len(boundary)
    assert np.any(loose.scores < 0.5) and np.all(loose.scores >= 0.2)


def test_a_score_threshold_over_the_svm_boundary_keeps_every_detection_scoring_over_it(
    frames: dict[int, np.ndarray],
) -> None:
    """Filtering windows before grouping would break up groups whose best window scores well above it."""
    boundary = detect(frames[0], upscale=1.0, score_threshold=0.5)
    strict = detect(frames[0], upscale=1.0, score_threshold=0.7)

    expected = sorted(map(tuple, boundary.xyxy[boundary.scores >= 0.7].round(1).tolist()))
    assert expected and sorted(map(tuple, strict.xyxy.round(1).tolist())) == expected


def test_a_detection_scoring_exactly_the_threshold_is_kept(frames: dict[int, np.ndarray]) -> None:
    boundary = detect(frames[0], upscale=1.0, score_threshold=0.5)
    middle = float(np.sort(boundary.scores)[len(boundary) // 2])

    at_middle = detect(frames[0], upscale=1.0, score_threshold=middle)

    assert middle in at_middle.scores.tolist()
    np.testing.assert_array_equal(at_middle.xyxy, boundary.xyxy[boundary.scores >= np.float32(middle)])


@pytest.mark.parametrize(("width", "height"), [(1, 1), (16, 16), (80, 60), (200, 90), (47, 400), (400, 111)])
def test_a_frame_no_window_fits_in_gives_no_detections(width: int, height: int) -> None:
    """OpenCV crashes the process on an image smaller than its window, padding included."""
    image = np.random.default_rng(width * height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert len(detect(image, upscale=1.0)) == 0
    assert len(detect(cv2.resize(image, (max(1, width // 4), max(1, height // 4))), upscale=0.25)) == 0


def test_empty_scene_gives_no_detections() -> None:
    assert len(detect(np.full((300, 400, 3), 90, dtype=np.uint8))) == 0


@pytest.mark.parametrize(
    "params",
    [{"win_stride": 4}, {"win_stride": 800_000_000_000}, {"upscale": 10.0}, {"pyramid_scale": 1.0},
     {"score_threshold": 1.5}, {"score_threshold": 0.0}, {"iou_threshold": 0.0}],
)
def test_declares_the_range_of_each_parameter(params: dict[str, object]) -> None:
    tool = PLUGIN.tool("detect_people")
    assert tool is not None
    assert len(declared_problems(tool, **params)) == 1


def test_rejects_a_window_step_that_is_not_a_multiple_of_8() -> None:
    tool = PLUGIN.tool("detect_people")
    assert tool is not None
    with pytest.raises(ValueError, match=r"win_stride must be a multiple of 8 \(the HOG block stride\), got 12"):
        tool.open(params_as_loaded(tool, win_stride=12))
