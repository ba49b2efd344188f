"""The `ssdlite` plugin: tool `detect_people`, SSDLite-MobileNetV2 trained on pedestrians.

About 20-25 ms per frame on two cores (OpenCV DNN, 300x300 input). The network sees the
whole frame squeezed to 300x300, so people shorter than about a twentieth of the frame
height are often missed. Each instance borrows a loaded model of its own and gives it back
when it closes (see `model.py`), so only the first `open`s in a process load weights.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from videodag_service.dag import Param, Plugin, Port, Tool, ToolInstance
from videodag_service.plugins.box_selection import iou_threshold_param, max_detections_param, score_threshold_param
from videodag_service.plugins.detections import Detections, frame_size_of
from videodag_service.plugins.frames import bgr_image
from videodag_service.plugins.models import ModelFileMissing, fetched_model_file
from videodag_service.plugins.ssdlite.boxes import select_boxes
from videodag_service.plugins.tool_settings import params_of, setting

if TYPE_CHECKING:
    from videodag_service.plugins.ssdlite.model import PedestrianModel

logger = logging.getLogger(__name__)

PERSON_LABEL = "person"
# The square pixels of a 65536 x 65536 frame (a hundred 8K frames), so no box reaches it and none is
# meant. Declared so that an area no one means (1e300) is refused as the pipeline loads: it overflows
# the float32 box areas it is compared with, and NumPy wrote a raw overflow warning outside the log.
_LARGEST_MIN_BOX_AREA = 1 << 32

@dataclass(frozen=True)
class _Settings:
    """The tool's parameters, each declared by its field (`tool_settings`)."""

    score_threshold: float = setting(score_threshold_param(0.4))
    iou_threshold: float = setting(iou_threshold_param(0.5))
    min_box_area: float = setting(
        Param("min_box_area", float, 0.0, "smallest box kept, in square pixels of the frame", minimum=0,
              maximum=_LARGEST_MIN_BOX_AREA)
    )
    max_detections: int = setting(max_detections_param(100))


DETECT_PEOPLE_PARAMS = params_of(_Settings)


class _PeopleDetectorInstance:
    """Runs its borrowed model on each frame with this run's thresholds."""

    def __init__(self, model: PedestrianModel, settings: _Settings) -> None:
        self._model: PedestrianModel | None = model
        self._settings = settings

    def process(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._model is None:
            raise RuntimeError("the detector was closed")
        image = bgr_image(inputs["image"])
        raw = self._model.predict(image)
        kept = select_boxes(
            raw.boxes,
            raw.scores,
            score_threshold=self._settings.score_threshold,
            iou_threshold=self._settings.iou_threshold,
            min_box_area=self._settings.min_box_area,
            max_detections=self._settings.max_detections,
        )
        return {
            "detections": Detections(
                xyxy=raw.boxes[kept], scores=raw.scores[kept], labels=(PERSON_LABEL,) * len(kept),
                frame_size=frame_size_of(image),
            )
        }

    def close(self) -> None:
        from videodag_service.plugins.ssdlite.model import give_back_pedestrian_model

        model, self._model = self._model, None
        if model is not None:
            give_back_pedestrian_model(model)


def _check_params(params: Mapping[str, Any]) -> None:
    """Looks for the model files when the pipeline loads. A missing one does not stop the load (a
    server may serve its other pipelines without it, and `open` says how to get it); it is logged
    as the server starts, so that it is not news at the first run."""
    _warn_once_if_the_model_is_missing()


@functools.cache
def _warn_once_if_the_model_is_missing() -> None:
    from videodag_service.plugins.ssdlite.model import FROZEN_GRAPH_FILE, TEXT_GRAPH_FILE

    try:
        for name in (FROZEN_GRAPH_FILE, TEXT_GRAPH_FILE):
            fetched_model_file(name)
    except ModelFileMissing as missing:
        logger.warning("ssdlite.detect_people cannot run, and every run of a pipeline using it will fail: %s",
                       missing)


def _open_detector(params: Mapping[str, Any]) -> ToolInstance:
    from videodag_service.plugins.ssdlite.model import borrow_pedestrian_model

    return _PeopleDetectorInstance(borrow_pedestrian_model(), _Settings(**params))


PLUGIN = Plugin(
    name="ssdlite",
    description="People detection with an SSDLite-MobileNetV2 pedestrian model on OpenCV DNN.",
    tools=(
        Tool(
            name="detect_people",
            description=(
                "Find people in a frame. Boxes are in frame pixels, label 'person', score in [0, 1]. "
                "Needs the model files from `python -m videodag_service.fetch_models`."
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
