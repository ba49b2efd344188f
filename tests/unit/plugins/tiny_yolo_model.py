"""Build tiny ONNX models that behave like exported YOLO detectors, for the yolo plugin's tests.

The model's output is a known prediction tensor plus 0 x the mean of its input image, so the
graph really consumes the image (ONNX Runtime runs it like a detector) while the boxes,
scores and classes it reports stay exactly what the test chose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "images"
OUTPUT_NAME = "output0"


def build_yolo_model(
    path: Path, predictions: npt.NDArray[np.float32], input_size: int | None = 640, *, unused_weight: bool = False,
    channels: int = 3, image_type: int = TensorProto.FLOAT, size_input: bool = False, batch: int = 1,
) -> Path:
    """Write a model whose single output is `predictions` (shape (1, A, B)) to `path`.

    `input_size` None gives a dynamic (batch, 3, height, width) input, like a model exported
    with dynamic axes; an int gives a fixed (1, 3, size, size) input. `unused_weight` leaves
    a weight no node reads, as some exports do, which ONNX Runtime warns of as it loads.
    `channels`, `image_type` and `batch` (of a fixed input) make the image input of another
    kind than a YOLO export's;
    `size_input` adds a second input, the image's size, as an RT-DETR export takes.
    """
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.ndim != 3 or predictions.shape[0] != 1:
        raise ValueError(f"predictions must have shape (1, A, B), got {predictions.shape}")
    input_shape: list[int | str] = (
        ["batch", channels, "height", "width"] if input_size is None else [batch, channels, input_size, input_size]
    )
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["image_floats"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_floats"], ["image_mean"], keepdims=0),
        helper.make_node("Mul", ["image_mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["predictions", "nothing"], [OUTPUT_NAME]),
    ]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, image_type, input_shape)]
    if size_input:
        nodes[-1:] = [
            helper.make_node("Add", ["predictions", "nothing"], ["predictions_out"]),
            helper.make_node("ReduceMean", ["orig_target_sizes"], ["size_mean"], keepdims=0),
            helper.make_node("Mul", ["size_mean", "zero"], ["no_size"]),
            helper.make_node("Add", ["predictions_out", "no_size"], [OUTPUT_NAME]),
        ]
        inputs.append(helper.make_tensor_value_info("orig_target_sizes", TensorProto.FLOAT, [1, 2]))
    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        inputs=inputs,
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, list(predictions.shape))],
        initializer=[
            numpy_helper.from_array(predictions, "predictions"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            *([numpy_helper.from_array(np.ones(4, dtype=np.float32), "unused_weight")] if unused_weight else []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
