"""The `rapidocr` plugin: find text in a frame, then read it, with rapidocr's PP-OCR models.

Finding and reading are two tools so a pipeline can be a real graph: `detect_text` gives
the regions, `recognize_text` reads the regions it is given (from `detect_text` or from any
other node producing `Detections`). The text-direction classifier is not used, so text
must be roughly horizontal and upright.

Models: the PP-OCR detection and recognition ONNX files bundled in the rapidocr wheel,
passed to rapidocr by explicit path. Given only a model directory rapidocr resolves names
through its download table and fetches any file missing (or failing its checksum) from the
network; with explicit paths it never goes there. The recognition model carries its
character set in its ONNX metadata, so no dictionary is fetched either.

Sharing: the models load once per process, on the first `open`, under a lock; instances
then share them without one. ONNX Runtime allows concurrent `run` calls on one session, the
shared recogniser only reads its attributes, and the per-call state (resize limits, score
thresholds) lives in each instance. We call the detector's session directly rather than
`TextDetector.__call__`, which stores its preprocessing op on the shared object and
reorders boxes without their scores.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videodag_service.dag import Param, Plugin, Port, Tool
from videodag_service.plugins.detections import Detections, frame_size_of
from videodag_service.plugins.onnx_runtime_log import onnx_runtime_logs_errors_only

TEXT_LABEL = "text"


@dataclass(frozen=True)
class _DetectorSettings:
    """rapidocr's defaults for the detection stage, read from its own config."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    binary_threshold: float
    max_candidates: int
    unclip_ratio: float
    use_dilation: bool
    score_mode: str


@dataclass(frozen=True)
class OcrModels:
    """The loaded models, shared by every instance in the process."""

    detector_session: Any  # rapidocr OrtInferSession: called with a (1, 3, H, W) float32 batch
    recognizer: Any  # rapidocr TextRecognizer
    detector_settings: _DetectorSettings


_models_lock = threading.Lock()
_models: OcrModels | None = None


def _bundled_model_path(models_dir: Path, stage_config: Any) -> Path:
    """The wheel's copy of the model rapidocr's config names for one stage; never downloads."""
    from rapidocr.inference_engine.base import FileInfo, InferSession

    model_url = InferSession.get_model_url(
        FileInfo(
            engine_type=stage_config.engine_type,
            ocr_version=stage_config.ocr_version,
            task_type=stage_config.task_type,
            lang_type=stage_config.lang_type,
            model_type=stage_config.model_type,
        )
    )["model_dir"]
    path = models_dir / Path(str(model_url)).name
    if not path.is_file():
        raise RuntimeError(
            f"the installed rapidocr does not bundle {path.name} in {models_dir}; "
            "videodag does not download models at run time"
        )
    return path


def _load_models() -> OcrModels:
    import rapidocr
    from rapidocr.ch_ppocr_det import TextDetector
    from rapidocr.ch_ppocr_rec import TextRecognizer
    from rapidocr.main import DEFAULT_CFG_PATH
    from rapidocr.utils.parse_parameters import ParseParams

    # rapidocr logs every model load at INFO, on a coloured handler of its own that writes past the
    # log (its lines were raw among JSON ones): its warnings go through the log, its INFO nowhere.
    rapidocr_log = logging.getLogger("RapidOCR")
    for handler in list(rapidocr_log.handlers):
        rapidocr_log.removeHandler(handler)
    rapidocr_log.propagate = True
    rapidocr_log.setLevel(logging.WARNING)
    onnx_runtime_logs_errors_only()

    config = ParseParams.load(DEFAULT_CFG_PATH)
    models_dir = Path(rapidocr.__file__).resolve().parent / "models"
    for stage in (config.Det, config.Rec):
        stage.engine_cfg = config.EngineConfig[stage.engine_type.value]
        stage.model_path = str(_bundled_model_path(models_dir, stage))
    config.Rec.font_path = None

    detector = TextDetector(config.Det)
    recognizer = TextRecognizer(config.Rec)
    det = config.Det
    return OcrModels(
        detector_session=detector.session,
        recognizer=recognizer,
        detector_settings=_DetectorSettings(
            mean=tuple(det.mean),
            std=tuple(det.std),
            binary_threshold=float(det.thresh),
            max_candidates=int(det.max_candidates),
            unclip_ratio=float(det.unclip_ratio),
            use_dilation=bool(det.use_dilation),
            score_mode=str(det.score_mode),
        ),
    )


def shared_models() -> OcrModels:
    """The process-wide models, loaded on first use (about a second)."""
    global _models
    if _models is None:
        with _models_lock:
            if _models is None:
                _models = _load_models()
    return _models


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """PP-OCR models take three channels; grayscale and BGRA frames are converted."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected a BGR or grayscale image, got shape {image.shape}")


def _reading_order(xyxy: np.ndarray) -> np.ndarray:
    """Indices sorting boxes top to bottom, then left to right within a line of text.

    Walking down by top edge, a box starts a new line when its top is at least half the
    median box height below the previous box's top.
    """
    if len(xyxy) == 0:
        return np.zeros((0,), dtype=np.intp)
    line_gap = max(1.0, float(np.median(xyxy[:, 3] - xyxy[:, 1])) / 2.0)
    by_top = np.argsort(xyxy[:, 1], kind="stable")
    new_line = np.diff(xyxy[by_top, 1], prepend=xyxy[by_top[0], 1]) >= line_gap
    line_of = np.empty(len(xyxy), dtype=np.intp)
    line_of[by_top] = np.cumsum(new_line)
    return np.lexsort((xyxy[:, 0], line_of))


class TextDetection:
    """Finds text regions in each frame; keeps nothing between frames."""

    def __init__(self, models: OcrModels, params: Mapping[str, Any]) -> None:
        from rapidocr.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

        settings = models.detector_settings
        self._session = models.detector_session
        self._preprocess = DetPreProcess(
            params["max_side_len"], "max", list(settings.mean), list(settings.std)
        )
        self._postprocess = DBPostProcess(
            thresh=settings.binary_threshold,
            box_thresh=params["min_score"],
            max_candidates=settings.max_candidates,
            unclip_ratio=settings.unclip_ratio,
            score_mode=settings.score_mode,
            use_dilation=settings.use_dilation,
        )
        self._max_regions: int = params["max_regions"]

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"regions": self.detect(_as_bgr(inputs["image"]))}

    def detect(self, image: np.ndarray) -> Detections:
        batch = self._preprocess(image)
        if batch is None:  # frame too small to resize to the network's 32-pixel grid
            return Detections(frame_size=frame_size_of(image))
        heatmap = self._session(batch)
        quads, scores = self._postprocess(heatmap, image.shape[:2])
        if len(quads) == 0:
            return Detections(frame_size=frame_size_of(image))
        quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
        xyxy = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1)
        found = Detections(
            xyxy=xyxy,
            scores=np.asarray(scores, dtype=np.float32),
            labels=(TEXT_LABEL,) * len(xyxy),
            frame_size=frame_size_of(image),
        )
        if len(found) > self._max_regions:
            found = found.select(np.argsort(-found.scores, kind="stable")[: self._max_regions])
        return found.select(_reading_order(found.xyxy))

    def close(self) -> None:
        return None


class TextRecognition:
    """Reads the text inside given regions of each frame; keeps nothing between frames."""

    def __init__(self, models: OcrModels, params: Mapping[str, Any]) -> None:
        self._recognizer = models.recognizer
        self._padding: float = params["padding"]
        self._min_confidence: float = params["min_confidence"]

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        regions = inputs["regions"]
        if not isinstance(regions, Detections):
            raise TypeError(f"recognize_text needs Detections as 'regions', got {type(regions).__name__}")
        return {"texts": self.recognize(_as_bgr(inputs["image"]), regions)}

    def recognize(self, image: np.ndarray, regions: Detections) -> Detections:
        from rapidocr.ch_ppocr_rec import TextRecInput

        crops: list[np.ndarray] = []
        cropped_indices: list[int] = []
        for index, box in enumerate(regions.xyxy):
            crop = self._crop(image, box)
            if crop is not None:
                crops.append(crop)
                cropped_indices.append(index)
        texts = [""] * len(regions)
        confidences = np.zeros((len(regions),), dtype=np.float32)
        if crops:
            result = self._recognizer(TextRecInput(img=crops))
            for index, text, confidence in zip(cropped_indices, result.txts, result.scores, strict=True):
                texts[index] = text.strip()
                confidences[index] = confidence
        keep = np.asarray(
            [bool(text) and confidences[i] >= self._min_confidence for i, text in enumerate(texts)],
            dtype=bool,
        ).reshape(-1)
        kept = regions.select(keep)
        return Detections(
            xyxy=kept.xyxy,
            scores=confidences[keep],
            labels=kept.labels,
            track_ids=kept.track_ids,
            texts=tuple(text for text, wanted in zip(texts, keep, strict=True) if wanted),
            frame_size=frame_size_of(image),
        )

    def _crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The box grown by `padding` x its height on each side, clipped; None when too thin to read."""
        height, width = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        margin = self._padding * max(0.0, y2 - y1)
        left, top = max(0, int(np.floor(x1 - margin))), max(0, int(np.floor(y1 - margin)))
        right, bottom = min(width, int(np.ceil(x2 + margin))), min(height, int(np.ceil(y2 + margin)))
        if right - left < 2 or bottom - top < 2:
            return None
        return image[top:bottom, left:right]

    def close(self) -> None:
        return None


def _open_detect_text(params: Mapping[str, Any]) -> TextDetection:
    return TextDetection(shared_models(), params)


def _open_recognize_text(params: Mapping[str, Any]) -> TextRecognition:
    return TextRecognition(shared_models(), params)


PLUGIN = Plugin(
    name="rapidocr",
    description="Text detection and recognition with rapidocr's PP-OCR models (ONNX Runtime, offline).",
    tools=(
        Tool(
            name="detect_text",
            description=(
                "Axis-aligned boxes around lines of text, in reading order; score is the detection score."
            ),
            inputs=(Port("image", "BGR frame", kind="image"),),
            outputs=(Port("regions", "Detections labelled 'text'", kind="detections"),),
            params=(
                Param(
                    "min_score", float, 0.5, "drop regions whose mean text probability is below this",
                    minimum=0, maximum=1,
                ),
                Param(
                    "max_side_len",
                    int,
                    960,
                    "shrink the frame so its longer side is at most this many pixels before "
                    "detection (cost grows with the area; small text needs more)",
                    minimum=32,
                ),
                Param("max_regions", int, 100, "keep at most this many regions, the highest-scoring ones",
                      minimum=1),
            ),
            open=_open_detect_text,
        ),
        Tool(
            name="recognize_text",
            description=(
                "Reads the text in each region; regions read as nothing or below min_confidence are dropped."
            ),
            inputs=(
                Port("image", "BGR frame", kind="image"),
                Port("regions", "Detections to read (e.g. from detect_text)", kind="detections"),
            ),
            outputs=(Port("texts", "Detections with texts; score is the recognition confidence", kind="detections"),),
            params=(
                Param("min_confidence", float, 0.5, "drop readings whose confidence is below this",
                      minimum=0, maximum=1),
                Param(
                    "padding",
                    float,
                    0.1,
                    "grow each region by this fraction of its height on every side before reading",
                    minimum=0,
                    maximum=2,
                ),
            ),
            open=_open_recognize_text,
        ),
    ),
)
