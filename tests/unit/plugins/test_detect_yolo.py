"""The yolo plugin against tiny ONNX models whose predictions the test chose.

Expected frame boxes are worked out by hand from the letterbox geometry, not with the
plugin's own helpers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto
from tiny_yolo_model import build_yolo_model

from fakes.fake_plugins import builtin_tool_pipeline, declared_problems, params_as_loaded
from videodag_service.dag import (
    DagPipelineService,
    PipelineFileError,
    PipelineSpec,
    ToolInstance,
    default_registry,
    load_pipeline_folder,
)
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.models import ModelFileMissing
from videodag_service.plugins.yolo import PLUGIN, letterbox

CLASS_NAMES = ["car", "person", "bicycle"]

# (cx, cy, w, h) in 640x640 input pixels and per-class scores (car, person, bicycle).
PREDICTIONS = [
    ((200, 300, 80, 160), (0.05, 0.90, 0.10)),  # A: person, kept
    ((204, 302, 80, 160), (0.00, 0.60, 0.00)),  # overlaps A, same class: suppressed by NMS
    ((200, 300, 80, 160), (0.00, 0.00, 0.70)),  # same box as A, other class: kept
    ((500, 250, 60, 40), (0.80, 0.00, 0.00)),  # a car, kept
    ((400, 400, 50, 50), (0.10, 0.00, 0.00)),  # under the score threshold
]
PADDING_ROWS = 60  # empty predictions, so boxes outnumber channels as in real exports


def yolov8_output() -> np.ndarray:
    rows = [(*box, *scores) for box, scores in PREDICTIONS] + [(0.0,) * 7] * PADDING_ROWS
    return np.array(rows, dtype=np.float32).T[None]  # (1, 4 + C, N)


def yolov5_output(objectness: float) -> np.ndarray:
    rows = [(*box, objectness, *scores) for box, scores in PREDICTIONS] + [(0.0,) * 8] * PADDING_ROWS
    return np.array(rows, dtype=np.float32)[None]  # (1, N, 5 + C)


def opened(**params: object) -> ToolInstance:
    tool = PLUGIN.tool("detect")
    assert tool is not None
    return tool.open(params_as_loaded(tool, **params))


def detect(model: Path, frame: np.ndarray, **params: object) -> Detections:
    instance = opened(model_path=str(model), **params)
    frame = frame.copy()
    frame.flags.writeable = False  # as the service hands frames to nodes
    try:
        return instance.process({"image": frame})["detections"]
    finally:
        instance.close()


def frame_of(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_decodes_yolov8_layout_back_to_frame_pixels(tmp_path: Path) -> None:
    model = build_yolo_model(tmp_path / "v8.onnx", yolov8_output())
    # 1280x720 -> scale 0.5 to 640x360, padded 140 px above and below.
    detections = detect(model, frame_of(720, 1280), class_names=CLASS_NAMES)

    assert detections.labels == ("person", "car", "bicycle")
    np.testing.assert_allclose(detections.scores, [0.90, 0.80, 0.70], atol=1e-6)
    # A: x (200 -/+ 40) / 0.5 = 320..480; y (300 -/+ 80 - 140) / 0.5 = 160..480.
    # Car: x (500 -/+ 30) / 0.5 = 940..1060; y (250 -/+ 20 - 140) / 0.5 = 180..260.
    np.testing.assert_allclose(
        detections.xyxy,
        [[320, 160, 480, 480], [940, 180, 1060, 260], [320, 160, 480, 480]],
        atol=1e-3,
    )


def test_decodes_yolov5_layout_with_objectness(tmp_path: Path) -> None:
    model = build_yolo_model(tmp_path / "v5.onnx", yolov5_output(objectness=0.5))
    # Portrait 480x960 (w x h) -> scale 2/3 to 320x640, padded 160 px left and right.
    detections = detect(model, frame_of(960, 480), score_threshold=0.3, class_names=CLASS_NAMES)

    # Scores are objectness x class score: 0.45, 0.40, 0.35 (the 0.6 duplicate becomes 0.3 and
    # is suppressed anyway; the 0.1 car becomes 0.05).
    assert detections.labels == ("person", "car", "bicycle")
    np.testing.assert_allclose(detections.scores, [0.45, 0.40, 0.35], atol=1e-6)
    # A: x (200 -/+ 40 - 160) * 1.5 = 0..120; y (300 -/+ 80) * 1.5 = 330..570.
    # Car: x (500 -/+ 30 - 160) * 1.5 = 465..555, clipped to the 480 px frame; y (250 -/+ 20) * 1.5 = 345..405.
    np.testing.assert_allclose(
        detections.xyxy,
        [[0, 330, 120, 570], [465, 345, 480, 405], [0, 330, 120, 570]],
        atol=1e-3,
    )


def test_labels_fall_back_to_class_ids(tmp_path: Path) -> None:
    model = build_yolo_model(tmp_path / "v8.onnx", yolov8_output())

    unnamed = detect(model, frame_of(640, 640))
    partly_named = detect(model, frame_of(640, 640), class_names=["car"])

    assert unnamed.labels == ("class_1", "class_0", "class_2")
    assert partly_named.labels == ("class_1", "car", "class_2")
    # A square frame needs no letterbox: boxes stay in input pixels.
    np.testing.assert_allclose(unnamed.xyxy[0], [160, 220, 240, 380], atol=1e-3)


def test_explicit_layout_and_thresholds(tmp_path: Path) -> None:
    model = build_yolo_model(tmp_path / "v8.onnx", yolov8_output())

    strict = detect(model, frame_of(640, 640), layout="yolov8", score_threshold=0.85)
    no_nms = detect(model, frame_of(640, 640), iou_threshold=1.0)
    capped = detect(model, frame_of(640, 640), max_detections=1)

    assert strict.labels == ("class_1",)
    assert len(no_nms) == 4  # the duplicate survives when no overlap is too much
    assert len(capped) == 1 and capped.scores[0] == pytest.approx(0.9)


def one_class_output(candidates: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """A YOLOv8 output of (cx, cy, w, h, score) candidates of one class, padded with empty ones."""
    rows = [*candidates, *[(0.0,) * 5] * PADDING_ROWS]
    return np.array(rows, dtype=np.float32).T[None]


def test_max_detections_keeps_the_best_boxes_left_after_suppression(tmp_path: Path) -> None:
    """Near-duplicates of the best object are suppressed before the cap counts, so they do not
    take the places of other objects."""
    model = build_yolo_model(
        tmp_path / "duplicates.onnx",
        one_class_output([
            (200, 200, 100, 100, 0.99), (202, 200, 100, 100, 0.98), (200, 202, 100, 100, 0.97),  # one object
            (450, 450, 80, 80, 0.90), (100, 500, 60, 60, 0.80),  # two others
        ]),
    )

    uncapped = detect(model, frame_of(640, 640))
    capped = {count: detect(model, frame_of(640, 640), max_detections=count) for count in (1, 2, 3, 4)}

    np.testing.assert_allclose(uncapped.scores, [0.99, 0.90, 0.80], atol=1e-6)
    for count, found in capped.items():
        np.testing.assert_allclose(found.xyxy, uncapped.xyxy[:count])
        np.testing.assert_allclose(found.scores, uncapped.scores[:count])


def test_max_detections_counts_objects_not_candidates_in_a_crowd(tmp_path: Path) -> None:
    """60 objects of 6 near-identical candidates each: the default cap of 300 keeps all 60."""
    centres = [(40 + 80 * (i % 8), 40 + 80 * (i // 8)) for i in range(60)]
    candidates = [
        (cx + shift, cy, 50, 50, 0.9 - 0.001 * i - 0.0001 * shift)
        for i, (cx, cy) in enumerate(centres)
        for shift in range(6)
    ]
    model = build_yolo_model(tmp_path / "crowd.onnx", one_class_output(candidates))

    found = detect(model, frame_of(640, 640))

    assert len(found) == 60
    np.testing.assert_allclose(found.xyxy[:, :2], [(cx - 25, cy - 25) for cx, cy in centres], atol=1e-3)


def test_a_box_in_the_letterbox_padding_is_not_reported(tmp_path: Path) -> None:
    """1280x720 is padded 140 input pixels above and below: a candidate lying there is empty in the
    frame, so it is neither reported nor counted against max_detections."""
    model = build_yolo_model(
        tmp_path / "padding.onnx",
        one_class_output([
            (200, 60, 80, 40, 0.95),  # y 40..80: above the frame
            (400, 590, 80, 40, 0.93),  # y 570..610: below it
            (200, 150, 80, 40, 0.91),  # y 130..170: straddles the frame's top edge
            (500, 300, 60, 60, 0.90),  # inside
        ]),
    )

    found = detect(model, frame_of(720, 1280))
    capped = detect(model, frame_of(720, 1280), max_detections=1)

    # (200 -/+ 40) / 0.5 = 320..480, (130..170 - 140) / 0.5 = -20..60 clipped to 0..60;
    # (500 -/+ 30) / 0.5 = 940..1060, (300 -/+ 30 - 140) / 0.5 = 260..380.
    np.testing.assert_allclose(found.xyxy, [[320, 0, 480, 60], [940, 260, 1060, 380]], atol=1e-3)
    np.testing.assert_allclose(capped.xyxy, [[320, 0, 480, 60]], atol=1e-3)


def test_a_score_equal_to_the_threshold_is_kept(tmp_path: Path) -> None:
    """score_threshold is the smallest score kept: OpenCV's NMS alone keeps only scores above it."""
    model = build_yolo_model(
        tmp_path / "boundary.onnx",
        one_class_output([(100, 100, 50, 50, 0.3), (300, 100, 50, 50, 0.25), (500, 100, 50, 50, 0.2999)]),
    )

    at_default = detect(model, frame_of(640, 640))  # score_threshold 0.25
    at_point_three = detect(model, frame_of(640, 640), score_threshold=0.3)

    np.testing.assert_allclose(at_default.scores, [0.3, 0.2999, 0.25], atol=1e-6)
    np.testing.assert_allclose(at_point_three.scores, [0.3], atol=1e-6)


def test_dynamic_input_model_takes_any_input_size(tmp_path: Path) -> None:
    one_box = np.zeros((1, 5, 40), dtype=np.float32)
    one_box[0, :, 0] = (160, 160, 80, 80, 0.9)
    model = build_yolo_model(tmp_path / "dynamic.onnx", one_box, input_size=None)
    # 1280x720 into 320: scale 0.25 to 320x180, padded 70 px above.
    detections = detect(model, frame_of(720, 1280), input_size=320)

    # x (160 -/+ 40) * 4 = 480..800; y (160 -/+ 40 - 70) * 4 = 200..520.
    np.testing.assert_allclose(detections.xyxy, [[480, 200, 800, 520]], atol=1e-3)
    assert detections.labels == ("class_0",)


def test_fixed_input_model_rejects_another_input_size(tmp_path: Path) -> None:
    model = build_yolo_model(tmp_path / "fixed.onnx", yolov8_output(), input_size=640)
    with pytest.raises(ValueError, match="input_size"):
        opened(model_path=str(model), input_size=320)


def test_a_box_count_opencv_cannot_hold_is_refused_before_any_frame() -> None:
    tool = PLUGIN.tool("detect")
    assert tool is not None
    assert declared_problems(tool, max_detections=3_000_000_000) == [
        "parameter 'max_detections' must be in [0, 2147483647], got 3000000000: at most this many boxes per frame, "
        "best first"
    ]


def test_missing_model_path_is_reported_at_open(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelFileMissing, match=r"nowhere\.onnx") as raised:
        opened(model_path=str(missing))
    assert isinstance(raised.value, FileNotFoundError)

    with pytest.raises(ValueError, match="model_path"):
        opened(model_path="")


def test_a_file_that_is_not_onnx_is_reported_at_open(tmp_path: Path) -> None:
    bogus = tmp_path / "weights.onnx"
    bogus.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValueError, match="cannot load"):
        opened(model_path=str(bogus))


def test_letterbox_pads_with_grey_and_feeds_rgb() -> None:
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[:, :] = (255, 0, 0)  # pure blue in BGR

    blob, fitted = letterbox(frame, 64)

    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert (fitted.ratio, fitted.pad_left, fitted.pad_top) == (0.32, 0, 16)
    # Image rows 16..47 hold the frame: RGB channel 2 (blue) is 1, the others 0.
    np.testing.assert_allclose(blob[0, :, 32, 32], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(blob[0, :, 5, 32], [114 / 255] * 3, atol=1e-6)
    np.testing.assert_allclose(blob[0, :, 60, 32], [114 / 255] * 3, atol=1e-6)


# --- the model, checked as the pipeline loads ----------------------------------------------------


def one_box_output() -> np.ndarray:
    """A YOLOv8 output holding one box, (160, 160, 80, 80) in input pixels, of class 0 scoring 0.9."""
    output = np.zeros((1, 5, 40), dtype=np.float32)
    output[0, :, 0] = (160, 160, 80, 80, 0.9)
    return output


def load_one_yolo_pipeline(folder: Path, **params: object) -> dict[str, PipelineSpec]:
    """Load a folder holding `found.yaml`, a pipeline whose node 'n' is a yolo.detect with `params`."""
    folder.mkdir()
    (folder / "found.yaml").write_text(builtin_tool_pipeline("found", "yolo.detect", params))
    return load_pipeline_folder(folder, default_registry())


def test_a_fixed_input_other_than_input_size_stops_the_load_naming_file_and_node(tmp_path: Path) -> None:
    """The likeliest mistake, a model exported at 320 with input_size left at 640, passed the load and then
    failed every run."""
    model = build_yolo_model(tmp_path / "tiny320.onnx", one_box_output(), input_size=320)
    with pytest.raises(PipelineFileError) as caught:
        load_one_yolo_pipeline(tmp_path / "pipelines", model_path=str(model))
    assert caught.value.problems == [
        f"{tmp_path / 'pipelines' / 'found.yaml'}: node 'n': {model} has a fixed input of [320, 320] pixels; "
        "set input_size to match (it is 640)"
    ]


@pytest.mark.parametrize(("kind", "said"), [
    ({"channels": 1}, "takes input shape [1, 1, 640, 640], expected (N, 3, H, W)"),
    ({"image_type": TensorProto.UINT8}, "takes its image as tensor(uint8), expected tensor(float) or tensor(float16)"),
    ({"size_input": True}, "takes 2 inputs ('images', 'orig_target_sizes'); a YOLO model takes one, the image"),
    ({"batch": 4}, "takes a fixed batch of 4 images, and the plugin sends one frame at a time: export it with "
                   "batch 1, or a dynamic batch"),
])
def test_a_model_that_does_not_take_one_float_bgr_image_stops_the_load_naming_file_and_node(
    tmp_path: Path, kind: dict[str, Any], said: str
) -> None:
    """A grayscale export, one taking bytes, an RT-DETR export taking the image's size too, one
    exported for batches of 4: each passed the load and then failed every frame."""
    model = build_yolo_model(tmp_path / "other.onnx", one_box_output(), **kind)
    with pytest.raises(PipelineFileError) as caught:
        load_one_yolo_pipeline(tmp_path / "pipelines", model_path=str(model))
    assert caught.value.problems == [f"{tmp_path / 'pipelines' / 'found.yaml'}: node 'n': {model} {said}"]


def test_a_file_that_is_not_an_onnx_model_stops_the_load_naming_file_and_node(tmp_path: Path) -> None:
    not_a_model = tmp_path / "hostname"
    not_a_model.write_text("a-host\n")
    with pytest.raises(PipelineFileError) as caught:
        load_one_yolo_pipeline(tmp_path / "pipelines", model_path=str(not_a_model))
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"{tmp_path / 'pipelines' / 'found.yaml'}: node 'n': cannot load model_path {str(not_a_model)!r} as an "
        "ONNX model: "
    )


def test_a_model_that_fits_is_loaded_once_as_the_pipeline_loads_and_its_runs_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    loaded: list[str] = []
    session_of_a_file = onnxruntime.InferenceSession

    def counted_session(path: str, *args: Any, **kwargs: Any) -> Any:
        loaded.append(path)
        return session_of_a_file(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counted_session)
    model = build_yolo_model(tmp_path / "tiny320.onnx", one_box_output(), input_size=320)

    dag = DagPipelineService(load_one_yolo_pipeline(tmp_path / "pipelines", model_path=str(model), input_size=320))
    assert loaded == [str(model)]
    result = dag.run_pipeline("found", {"frame_index": 0, "timestamp": 0.0, "image": frame_of(320, 320)})

    assert loaded == [str(model)]
    # A 320 x 320 frame needs no letterbox: 160 -/+ 40 either way.
    (found,) = result["detections"]
    assert (found["label"], found["box"]) == ("class_0", pytest.approx([120, 120, 200, 200], abs=1e-3))
    assert found["score"] == pytest.approx(0.9)


LOAD_PIPELINES = """
import sys
from pathlib import Path
from videodag_service.dag import default_registry, load_pipeline_folder
print(sorted(load_pipeline_folder(Path(sys.argv[1]), default_registry())))
"""


def test_onnx_runtime_warnings_of_a_model_stay_off_stderr(tmp_path: Path) -> None:
    """ONNX Runtime wrote its warning of an unused weight on stderr itself, in colour, among the
    log's JSON lines; in a process of its own, as the severity is the process's."""
    model = build_yolo_model(tmp_path / "leftover.onnx", yolov8_output(), unused_weight=True)
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "leftover.yaml").write_text(builtin_tool_pipeline("leftover", "yolo.detect", {"model_path": str(model)}))
    loaded = subprocess.run([sys.executable, "-c", LOAD_PIPELINES, str(folder)], capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "['leftover']"
    assert loaded.stderr == ""
