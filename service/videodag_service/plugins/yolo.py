"""The `yolo` plugin: tool `detect`, the user's own YOLO-format ONNX detector on ONNX Runtime.

Any model exported the usual way (Ultralytics `export(format="onnx")`, YOLOv5 `export.py`)
works: one image input (N, 3, H, W) taking RGB in [0, 1], and a first output in one of
the two common layouts, recognised by shape (or forced with `layout`):

- YOLOv5: (1, N, 5 + C) rows of cx, cy, w, h, objectness, C class scores; score is
  objectness * class score.
- YOLOv8 and later: (1, 4 + C, N) columns of cx, cy, w, h, C class scores.

Boxes are in input pixels of the letterboxed image; they are mapped back through the
letterbox to frame pixels and clipped to the frame, and one left empty (it lay in the padding)
is dropped. NMS is per class. Labels come from `class_names` by class id,
or read `class_<id>` when the list is empty or too short.

Sharing: one ONNX Runtime session per model file per process, created when a pipeline naming
it loads (the parameter check loads the model, so a file that is not an ONNX model, or not one
of YOLO's inputs and sizes, stops the server at start rather than failing every run)
and taken by every `open` after it (a file replaced on disk gets a new session). ONNX Runtime
allows concurrent `run` calls on one session, so instances share it without a lock.
onnxruntime itself is imported on that first load, keeping the plugin cheap to import.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from videodag_service.dag import REQUIRED, Param, Plugin, Port, Tool, ToolInstance
from videodag_service.dag.params import raise_if_any
from videodag_service.plugins.box_selection import (
    iou_threshold_param,
    max_detections_param,
    score_threshold_param,
    scoring_enough,
    select_best_boxes,
)
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.frames import bgr_image
from videodag_service.plugins.models import ModelFileMissing
from videodag_service.plugins.onnx_runtime_log import onnx_runtime_logs_errors_only
from videodag_service.plugins.tool_settings import params_of, setting

LAYOUTS = ("auto", "yolov5", "yolov8")
# The grey YOLO training pipelines pad letterboxed images with.
LETTERBOX_FILL = (114, 114, 114)

@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square input: scaled by `ratio`, then shifted by the padding."""

    ratio: float
    pad_left: int
    pad_top: int

    def to_frame(self, xyxy: npt.NDArray[np.float32], width: int, height: int) -> npt.NDArray[np.float32]:
        """Boxes in input pixels -> boxes in frame pixels, clipped to the frame."""
        shift = np.array([self.pad_left, self.pad_top, self.pad_left, self.pad_top], dtype=np.float32)
        boxes = (xyxy - shift) / self.ratio
        frame = np.array([width, height, width, height], dtype=np.float32)
        clipped: npt.NDArray[np.float32] = np.clip(boxes, 0.0, frame).astype(np.float32)
        return clipped


def letterbox(image: npt.NDArray[np.uint8], size: int) -> tuple[npt.NDArray[np.float32], Letterbox]:
    """Resize keeping the aspect ratio, pad to size x size, and make an NCHW RGB [0, 1] blob."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_width, new_height = max(1, round(width * ratio)), max(1, round(height * ratio))
    resized: np.ndarray = image
    if (new_width, new_height) != (width, height):
        interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    pad_left, pad_top = (size - new_width) // 2, (size - new_height) // 2
    padded = cv2.copyMakeBorder(
        resized, pad_top, size - new_height - pad_top, pad_left, size - new_width - pad_left,
        cv2.BORDER_CONSTANT, value=LETTERBOX_FILL,
    )
    blob = np.asarray(cv2.dnn.blobFromImage(padded, 1.0 / 255.0, swapRB=True), dtype=np.float32)
    return blob, Letterbox(ratio=ratio, pad_left=pad_left, pad_top=pad_top)


@dataclass(frozen=True)
class Candidates:
    """Every prediction of one frame: center boxes (cx, cy, w, h) in input pixels, best class and its score."""

    cxcywh: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int64]


def resolve_layout(shape: tuple[int, ...], layout: str, class_count: int) -> str:
    """Which layout a (1, A, B) output has: forced, told by the class count, or channels < boxes."""
    if layout != "auto":
        return layout
    rows, columns = shape[-2], shape[-1]
    if class_count:
        if columns == 5 + class_count and rows != 4 + class_count:
            return "yolov5"
        if rows == 4 + class_count and columns != 5 + class_count:
            return "yolov8"
    return "yolov8" if rows < columns else "yolov5"


def decode_output(output: npt.NDArray[np.float32], layout: str) -> Candidates:
    """Candidates from a model output of the given layout ("yolov5" or "yolov8")."""
    predictions = np.asarray(output, dtype=np.float32)
    if predictions.ndim == 3:
        if predictions.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got output shape {predictions.shape}")
        predictions = predictions[0]
    if predictions.ndim != 2:
        raise ValueError(f"expected a (1, A, B) output, got shape {output.shape}")
    if layout == "yolov8":
        predictions = predictions.T
        if predictions.shape[1] < 5:
            raise ValueError(f"a YOLOv8 output needs 4 + C >= 5 rows, got shape {output.shape}")
        class_scores = predictions[:, 4:]
    elif layout == "yolov5":
        if predictions.shape[1] < 6:
            raise ValueError(f"a YOLOv5 output needs 5 + C >= 6 columns, got shape {output.shape}")
        class_scores = predictions[:, 5:] * predictions[:, 4:5]
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS[1:]}")
    class_ids = np.argmax(class_scores, axis=1)
    scores = np.take_along_axis(class_scores, class_ids[:, None], axis=1)[:, 0]
    return Candidates(cxcywh=predictions[:, :4], scores=scores.astype(np.float32), class_ids=class_ids.astype(np.int64))


def select_candidates(
    candidates: Candidates,
    fitted: Letterbox,
    frame_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """The indices of the candidates a frame reports, best score first, and their boxes in frame pixels.

    Boxes are mapped back through the letterbox and clipped to the frame (`frame_size` is width,
    height) before any is chosen: a candidate lying in the padding is empty once clipped and is
    never reported nor counted against `max_detections`, and suppression compares boxes as they
    are reported.
    """
    scoring = np.flatnonzero(scoring_enough(candidates.scores, score_threshold))
    centers = candidates.cxcywh[scoring]
    xyxy = np.concatenate([centers[:, :2] - centers[:, 2:] / 2, centers[:, :2] + centers[:, 2:] / 2], axis=1)
    boxes = fitted.to_frame(xyxy.astype(np.float32), *frame_size)
    kept = select_best_boxes(
        boxes, candidates.scores[scoring], score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections, class_ids=candidates.class_ids[scoring],
    )
    return scoring[kept], boxes[kept]


def label_for(class_id: int, class_names: tuple[str, ...]) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class_{class_id}"


# --- sessions -----------------------------------------------------------------------------------

_sessions: dict[tuple[Path, int, int], Any] = {}
_sessions_lock = threading.Lock()


def _session_for(model_path: Path) -> Any:
    """The process-wide ONNX Runtime session for a model file, created on first use."""
    status = model_path.stat()
    key = (model_path.resolve(), status.st_mtime_ns, status.st_size)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            import onnxruntime

            onnx_runtime_logs_errors_only()
            try:
                session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
            except Exception as error:  # ORT raises its own Fail/InvalidGraph types
                raise ValueError(f"cannot load model_path {str(model_path)!r} as an ONNX model: {error}") from error
            _sessions[key] = session
        return session


@dataclass(frozen=True)
class _Settings:
    """The tool's parameters, each declared by its field (`tool_settings`), with the model file as a path
    and the class names as a tuple."""

    model_path: Path = setting(Param("model_path", str, REQUIRED, "path of the YOLO ONNX model file on the server; "
                                     "a relative one is taken from the server's working directory"))
    class_names: tuple[str, ...] = setting(
        Param("class_names", list, [], "class names by class id; missing ids are labelled 'class_<id>'")
    )
    score_threshold: float = setting(score_threshold_param(0.25))
    iou_threshold: float = setting(iou_threshold_param(0.45))
    input_size: int = setting(Param("input_size", int, 640, "side of the square letterboxed input; must match a "
                                    "fixed-size model", minimum=32, maximum=4096))
    max_detections: int = setting(max_detections_param(300))
    layout: str = setting(
        Param("layout", str, "auto", "output layout: auto (by shape), yolov5 or yolov8", choices=LAYOUTS)
    )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> _Settings:
        settings, problems = cls.checked(params)
        raise_if_any(problems)
        return settings

    @classmethod
    def checked(cls, params: Mapping[str, Any]) -> tuple[_Settings, list[str]]:
        """The settings the parameters give, and every problem their declarations cannot say (the model
        file aside)."""
        problems: list[str] = []
        if not _names_a_model(params["model_path"]):
            problems.append("yolo.detect needs model_path: the path of a YOLO ONNX model file")
        class_names = params["class_names"]
        if not all(isinstance(name, str) for name in class_names):
            problems.append(f"class_names must be a list of strings, got {class_names!r}")
        model_path = Path(params["model_path"])
        try:
            model_path = model_path.expanduser()
        except RuntimeError:  # a `~` with no home to stand for (no HOME, no passwd entry)
            problems.append(f"model_path {str(model_path)!r} starts with ~, and this user has no home directory: "
                            "give the full path")
        settings = cls(**{**params, "model_path": model_path, "class_names": tuple(class_names)})
        return settings, problems

    def missing_model(self) -> ModelFileMissing | None:
        """The error for a model_path that names no file, or None when the file is there."""
        if self.model_path.is_file():
            return None
        return ModelFileMissing(
            self.model_path, "yolo.detect's model_path must name an existing YOLO ONNX file on the server"
        )


DETECT_PARAMS = params_of(_Settings)


def _names_a_model(model_path: str) -> bool:
    return bool(model_path.strip())


# The element types a YOLO export's image input comes in; the frame is scaled to 0-1 in either.
_IMAGE_INPUT_TYPES = ("tensor(float)", "tensor(float16)")


def _image_input(session: Any, settings: _Settings) -> Any:
    """The model's image input (an ONNX Runtime NodeArg); raises ValueError when the model is not
    one YOLO image in and a prediction out: another count of inputs (an RT-DETR export also takes
    the image's size), no output, an input that is not (N, 3, H, W) floats, a fixed batch other
    than 1, or a fixed side other than `input_size`. Each passed the load and failed every frame.
    Checked when the pipeline loads and again at each open, with the same words."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(repr(each.name) for each in inputs) or "none"
        raise ValueError(f"{settings.model_path} takes {len(inputs)} inputs ({names}); a YOLO model takes one, "
                         "the image")
    if not outputs:
        raise ValueError(f"{settings.model_path} has no output; a YOLO model gives its predictions")
    (model_input,) = inputs
    channels = model_input.shape[1] if len(model_input.shape) == 4 else None  # a name, or None, when dynamic
    if len(model_input.shape) != 4 or (isinstance(channels, int) and channels != 3):
        raise ValueError(f"{settings.model_path} takes input shape {model_input.shape}, expected (N, 3, H, W)")
    batch = model_input.shape[0]
    if isinstance(batch, int) and batch != 1:
        raise ValueError(f"{settings.model_path} takes a fixed batch of {batch} images, and the plugin sends one "
                         "frame at a time: export it with batch 1, or a dynamic batch")
    if model_input.type not in _IMAGE_INPUT_TYPES:
        raise ValueError(f"{settings.model_path} takes its image as {model_input.type}, expected tensor(float) or "
                         "tensor(float16)")
    fixed_side = [dim for dim in model_input.shape[2:] if isinstance(dim, int)]
    if any(side != settings.input_size for side in fixed_side):
        raise ValueError(
            f"{settings.model_path} has a fixed input of {model_input.shape[2:]} pixels; "
            f"set input_size to match (it is {settings.input_size})"
        )
    return model_input


class _YoloDetector:
    def __init__(self, session: Any, settings: _Settings) -> None:
        self._session = session
        self._settings = settings
        model_input = _image_input(session, settings)
        self._input_name: str = model_input.name
        self._input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self._output_name: str = session.get_outputs()[0].name

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"detections": self.detect(bgr_image(inputs["image"]))}

    def detect(self, image: npt.NDArray[np.uint8]) -> Detections:
        settings = self._settings
        blob, fitted = letterbox(image, settings.input_size)
        (output,) = self._session.run([self._output_name], {self._input_name: blob.astype(self._input_dtype)})
        layout = resolve_layout(tuple(output.shape), settings.layout, len(settings.class_names))
        candidates = decode_output(output, layout)
        height, width = image.shape[:2]
        kept, boxes = select_candidates(
            candidates, fitted, (width, height), settings.score_threshold, settings.iou_threshold,
            settings.max_detections,
        )
        return Detections(
            xyxy=boxes,
            scores=candidates.scores[kept],
            labels=tuple(label_for(int(class_id), settings.class_names) for class_id in candidates.class_ids[kept]),
            frame_size=(width, height),
        )

    def close(self) -> None:
        return None


def _check_params(params: Mapping[str, Any]) -> None:
    """The settings `open` would build, and the model they name, checked when the pipeline loads. The model
    is loaded here, into the process's session cache each `open` takes it from: a file that is not an ONNX
    model, or one taking other inputs or sizes than `input_size`, would otherwise pass the load and fail every
    run, and the first run finds the model loaded rather than loading it."""
    settings, problems = _Settings.checked(params)
    if _names_a_model(params["model_path"]):
        problems.extend(_model_problems(settings))
    raise_if_any(problems)


def _model_problems(settings: _Settings) -> list[str]:
    """Why the model at `settings.model_path` cannot serve these settings (not there, not ONNX, other
    inputs, another fixed input size), as `open` would say it; empty when it can."""
    missing = settings.missing_model()
    if missing is not None:
        return [str(missing)]
    try:
        _image_input(_session_for(settings.model_path), settings)
    except ValueError as error:
        return [str(error)]
    return []


def _open_detector(params: Mapping[str, Any]) -> ToolInstance:
    settings = _Settings.from_params(params)
    missing = settings.missing_model()
    if missing is not None:
        raise missing
    return _YoloDetector(_session_for(settings.model_path), settings)


PLUGIN = Plugin(
    name="yolo",
    description="Object detection with your own YOLOv5/YOLOv8-format ONNX model on ONNX Runtime.",
    tools=(
        Tool(
            name="detect",
            description=(
                "Detect objects with the YOLO ONNX model at model_path (letterboxed input, per-class NMS). "
                "Boxes in frame pixels; labels from class_names or 'class_<id>'."
            ),
            inputs=(Port("image", "BGR frame, (H, W, 3) uint8", kind="image"),),
            outputs=(Port("detections", "Detections, one label per class", kind="detections"),),
            params=DETECT_PARAMS,
            open=_open_detector,
            stateful=False,
            check_params=_check_params,
        ),
    ),
)
