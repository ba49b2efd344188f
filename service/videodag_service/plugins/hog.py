"""The `hog` plugin: tool `detect_people`, OpenCV 4's HOG + linear SVM people detector.

No model files: the SVM weights ship inside OpenCV (`getDefaultPeopleDetector`; OpenCV 5
dropped them, hence the <5 pin). The detector's window is 64x128 with the person about
96 px tall inside it, so people under ~100 px are missed unless the frame is enlarged
first: `upscale` does that, and boxes are mapped back to the original frame's pixels.
It costs time: on two cores a 768x576 frame takes ~120 ms at upscale 1.0, ~280 ms at 1.5
and ~400 ms at 2.0 with pyramid_scale 1.05; pyramid_scale 1.1 roughly halves that.

Scores: the SVM margin of each grouped detection, passed through a sigmoid so it lands in
[0, 1] like other detectors' scores; 0.5 is the SVM's own decision boundary.

Each instance owns its HOGDescriptor (a few KB), so instances never share mutable state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from videodag_service.dag import Param, Plugin, Port, Tool, ToolInstance
from videodag_service.plugins.box_selection import iou_threshold_param, score_threshold_param, select_best_boxes
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.frames import bgr_image
from videodag_service.plugins.tool_settings import params_of, setting

PERSON_LABEL = "person"
_PADDING = 8  # pixels around the enlarged frame, so people at its edges still fill a window
# A stride beyond any frame's size finds nothing more than one such window per row; OpenCV takes an int.
_MAX_WIN_STRIDE = 1 << 16
# Scores are sigmoid(margin). Below 0.05 (a margin of -2.9) nearly every window of a frame
# counts, and OpenCV's grouping takes seconds a frame to merge them into a few meaningless boxes.
_SMALLEST_SCORE_THRESHOLD = 0.05

@dataclass(frozen=True)
class _Settings:
    """The tool's parameters, each declared by its field (`tool_settings`), and what follows from them."""

    upscale: float = setting(Param("upscale", float, 1.5, "enlarge the frame by this factor before detecting "
                                   "(finds smaller people)", minimum=0.25, maximum=4))
    score_threshold: float = setting(score_threshold_param(
        0.5, minimum=_SMALLEST_SCORE_THRESHOLD,
        note=f"score = sigmoid(SVM margin), 0.5 = margin 0; below {_SMALLEST_SCORE_THRESHOLD} nearly every window "
        "counts and grouping merges them into a few boxes",
    ))
    iou_threshold: float = setting(iou_threshold_param(0.45))
    pyramid_scale: float = setting(Param("pyramid_scale", float, 1.05, "step between image pyramid levels; larger "
                                         "is faster but coarser", minimum=1, minimum_inclusive=False))
    win_stride: int = setting(Param("win_stride", int, 8, "window step in pixels of the enlarged frame; a multiple "
                                    "of 8", minimum=8, maximum=_MAX_WIN_STRIDE))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> _Settings:
        settings = cls(**params)
        # The HOG block stride is 8 px; OpenCV supports no other window step.
        if settings.win_stride % 8 != 0:
            raise ValueError(f"win_stride must be a multiple of 8 (the HOG block stride), got {settings.win_stride}")
        return settings

    @property
    def hit_threshold(self) -> float:
        """The SVM margin a window needs to count: OpenCV drops windows below its `hitThreshold`
        (margin 0, score 0.5, by default) before grouping them, so a `score_threshold` under 0.5
        lowers it. One above 0.5 leaves it at 0 and filters the grouped detections instead:
        dropping their weaker windows first would break up groups whose best window scores
        well above the threshold."""
        if self.score_threshold >= 0.5:
            return 0.0
        return math.log(self.score_threshold / (1.0 - self.score_threshold))


DETECT_PEOPLE_PARAMS = params_of(_Settings)


class _HogPeopleDetector:
    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), dtype=np.float32))

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        image = bgr_image(inputs["image"])
        return {"detections": self.detect(image)}

    def detect(self, image: npt.NDArray[np.uint8]) -> Detections:
        settings = self._settings
        height, width = image.shape[:2]
        # A frame no window fits in has nothing to find; OpenCV 4 would crash the process on it
        # (a segfault, a heap corruption), and refuses to shrink it to nothing.
        nothing = Detections(frame_size=(width, height))
        if not self._window_fits(width * settings.upscale, height * settings.upscale):
            return nothing
        scaled: np.ndarray = image
        if settings.upscale != 1.0:
            interpolation = cv2.INTER_LINEAR if settings.upscale > 1.0 else cv2.INTER_AREA
            scaled = cv2.resize(image, None, fx=settings.upscale, fy=settings.upscale, interpolation=interpolation)
            if not self._window_fits(scaled.shape[1], scaled.shape[0]):  # rounded down after all
                return nothing
        stride = (settings.win_stride, settings.win_stride)
        rects, margins = self._hog.detectMultiScale(
            scaled, hitThreshold=settings.hit_threshold, winStride=stride, padding=(_PADDING, _PADDING),
            scale=settings.pyramid_scale,
        )
        if len(rects) == 0:
            return Detections(frame_size=(width, height))
        xywh = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / settings.upscale
        scores = (1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64).reshape(-1)))).astype(np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        xyxy = np.clip(xyxy, 0.0, np.array([width, height, width, height], dtype=np.float32)).astype(np.float32)
        kept = select_best_boxes(
            xyxy, scores, score_threshold=settings.score_threshold, iou_threshold=settings.iou_threshold
        )
        return Detections(xyxy=xyxy[kept], scores=scores[kept], labels=(PERSON_LABEL,) * len(kept),
                          frame_size=(width, height))

    def _window_fits(self, width: float, height: float) -> bool:
        window_width, window_height = self._hog.winSize
        return width + 2 * _PADDING >= window_width and height + 2 * _PADDING >= window_height

    def close(self) -> None:
        return None


def _check_params(params: Mapping[str, Any]) -> None:
    """The settings `open` would build, checked when the pipeline loads."""
    _Settings.from_params(params)


def _open_detector(params: Mapping[str, Any]) -> ToolInstance:
    return _HogPeopleDetector(_Settings.from_params(params))


PLUGIN = Plugin(
    name="hog",
    description="People detection with OpenCV's HOG + linear SVM detector (no model files).",
    tools=(
        Tool(
            name="detect_people",
            description=(
                "Find upright people in a frame with HOG features. Slower and less accurate than "
                "ssdlite.detect_people, but needs no model files. Boxes in frame pixels, label 'person'."
            ),
            inputs=(Port("image", "BGR frame, (H, W, 3) uint8", kind="image"),),
            outputs=(Port("detections", "Detections labelled 'person'", kind="detections"),),
            params=DETECT_PEOPLE_PARAMS,
            open=_open_detector,
            stateful=False,
            check_params=_check_params,
        ),
    ),
)
