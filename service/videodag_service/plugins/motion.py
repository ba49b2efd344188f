"""The `motion` plugin: moving regions found by background subtraction (OpenCV MOG2).

The background model is the run's state: each opened instance builds its own subtractor,
so two videos never learn from each other's frames. The first frame of a run only seeds
the model (there is no background to compare it with yet), so it reports no blobs. A region
that stops moving melts into the background after a while (about a tenth of `history`
frames once the model has warmed up), as MOG2 intends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from videodag_service.dag import Param, Plugin, Port, Tool
from videodag_service.plugins.detections import LARGEST_OPENCV_COUNT, Detections

MOTION_LABEL = "motion"

# MOG2 marks shadows 127 and foreground 255; anything above this is true foreground.
_FOREGROUND_LEVEL = 200
# Opening removes speckle from sensor noise; closing then joins the pieces of one mover
# (a person's limbs and torso often come out as separate fragments).
_OPEN_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_CLOSE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
# A downscale beyond any frame's side shrinks every frame to one pixel, so none is meant. Declared so
# that one no one means (10**300) is refused as the pipeline loads: its square overflows the float
# that min_area is scaled by, which failed every run at open.
_LARGEST_DOWNSCALE = 1 << 16


class ForegroundBlobs:
    """One run's background model; turns each frame into boxes around what moved."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=params["history"],
            varThreshold=params["var_threshold"],
            detectShadows=params["detect_shadows"],
        )
        self._learning_rate: float = params["learning_rate"]
        self._downscale: int = params["downscale"]
        # min_area is in full-frame pixels; blobs are counted at the processing scale.
        self._min_area_scaled: float = params["min_area"] / float(self._downscale**2)
        self._seeded = False

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        image = inputs["image"]
        height, width = image.shape[:2]
        small = self._shrink(image)
        # A rate of 1 makes MOG2 rebuild its model from this frame alone: that is the seed, and
        # it lets a learning_rate of 0 freeze the first frame rather than never learn anything.
        raw_mask = self._subtractor.apply(small, learningRate=self._learning_rate if self._seeded else 1.0)
        if not self._seeded:
            self._seeded = True
            return {"blobs": Detections(frame_size=(width, height)), "foreground_ratio": 0.0}
        mask = self._clean(raw_mask)
        foreground_ratio = cv2.countNonZero(mask) / float(mask.size)
        return {
            "blobs": self._blobs(mask, width, height),
            "foreground_ratio": round(foreground_ratio, 4),
        }

    def close(self) -> None:
        # The background model is plain memory, freed with the instance.
        return None

    def _shrink(self, image: np.ndarray) -> np.ndarray:
        if self._downscale == 1:
            return image
        height, width = image.shape[:2]
        size = (max(1, width // self._downscale), max(1, height // self._downscale))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    @staticmethod
    def _clean(raw_mask: np.ndarray) -> np.ndarray:
        _, mask = cv2.threshold(raw_mask, _FOREGROUND_LEVEL, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPEN_KERNEL)
        # Closing's erosion takes what lies beyond the frame as foreground (OpenCV's default), so a
        # blob a few pixels from an edge would come back stretched to it. Closed inside a border
        # of background as wide as the kernel's reach, it keeps its true extent.
        reach = _CLOSE_KERNEL.shape[0] // 2
        bordered = cv2.copyMakeBorder(mask, reach, reach, reach, reach, cv2.BORDER_CONSTANT, value=0)
        closed = cv2.morphologyEx(bordered, cv2.MORPH_CLOSE, _CLOSE_KERNEL)
        return closed[reach:-reach, reach:-reach]

    def _blobs(self, mask: np.ndarray, width: int, height: int) -> Detections:
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[list[float]] = []
        scores: list[float] = []
        scale_x = width / mask.shape[1]
        scale_y = height / mask.shape[0]
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if w * h < self._min_area_scaled:  # too few pixels even if it filled its box
                continue
            pixels = _pixels_within(contour, mask[y : y + h, x : x + w], x, y)
            if pixels < self._min_area_scaled:
                continue
            scores.append(pixels / float(w * h))
            boxes.append(
                [
                    x * scale_x,
                    y * scale_y,
                    min(width, (x + w) * scale_x),
                    min(height, (y + h) * scale_y),
                ]
            )
        return Detections.from_lists(boxes, scores, [MOTION_LABEL] * len(boxes), frame_size=(width, height))


def _pixels_within(contour: np.ndarray, box_mask: np.ndarray, x: int, y: int) -> int:
    """The foreground pixels a blob's outer contour encloses, `box_mask` being the mask within its
    bounding box at (x, y): the blob's own less its holes, with any blob inside a hole (which
    RETR_EXTERNAL does not report apart). Counted, not taken from the area of the contour's
    polygon (`cv2.contourArea`), which runs through the boundary pixels' centres: about
    (w - 1) x (h - 1) for a w x h blob, which would put a 15 x 15 blob (225 pixels) under a
    min_area of 200. Connected-component stats would count the same pixels at five times the
    cost on the sample clip's masks."""
    enclosed = np.zeros_like(box_mask)
    cv2.drawContours(enclosed, [contour], -1, 255, cv2.FILLED, offset=(-x, -y))
    return int(cv2.countNonZero(cv2.bitwise_and(enclosed, box_mask)))


def check_foreground_blobs_params(params: Mapping[str, Any]) -> None:
    """Raise ValueError for a learning rate MOG2 cannot work with, a rule with a hole no declared range
    can say; run when the pipeline loads and at open."""
    # 1 is not a rate to MOG2 but "rebuild the model from every frame", which detects nothing useful.
    if not (params["learning_rate"] == -1 or 0 <= params["learning_rate"] < 1):
        raise ValueError(
            f"learning_rate must be -1 (automatic) or at least 0 and below 1, got {params['learning_rate']}"
        )


def _open_foreground_blobs(params: Mapping[str, Any]) -> ForegroundBlobs:
    check_foreground_blobs_params(params)
    return ForegroundBlobs(params)


PLUGIN = Plugin(
    name="motion",
    description="Moving regions by background subtraction.",
    tools=(
        Tool(
            name="foreground_blobs",
            description=(
                "Boxes around connected moving regions (OpenCV MOG2 background model, learnt per run). "
                "A box's score is the fraction of its pixels that belong to its region: the region's "
                "count of foreground pixels, the measure min_area is compared with, over the box's area."
            ),
            inputs=(Port("image", "BGR frame", kind="image"),),
            outputs=(
                Port("blobs", "Detections labelled 'motion'", kind="detections"),
                Port("foreground_ratio", "fraction of the frame that is foreground, 0-1", kind="float"),
            ),
            params=(
                Param("history", int, 200, "frames the background model remembers",
                      minimum=1, maximum=LARGEST_OPENCV_COUNT),
                Param(
                    "var_threshold",
                    float,
                    16.0,
                    "squared Mahalanobis distance above which a pixel is foreground",
                    minimum=0,
                    minimum_inclusive=False,
                ),
                Param("min_area", int, 200,
                      "smallest blob kept: its count of foreground pixels, in full-frame pixels (at a "
                      "downscale of d each pixel processed counts d x d)", minimum=0),
                Param(
                    "detect_shadows",
                    bool,
                    False,
                    "mark shadows and leave them out of the foreground (slower)",
                ),
                Param(
                    "learning_rate",
                    float,
                    -1.0,
                    "background update rate in [0, 1); 0 freezes "
                    "the first frame as background; -1 adapts fast at first, then 1/history",
                ),
                Param(
                    "downscale",
                    int,
                    1,
                    "process at 1/downscale of the width and height (faster); boxes "
                    "are mapped back to full-frame pixels",
                    minimum=1,
                    maximum=_LARGEST_DOWNSCALE,
                ),
            ),
            open=_open_foreground_blobs,
            stateful=True,
            check_params=check_foreground_blobs_params,
        ),
    ),
)
