"""The pieces behind the ssdlite plugin: text-graph pruning, anchors, box decoding, model files."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from videodag_service.plugins.models import (
    DEFAULT_MODEL_DIR,
    MODEL_DIR_ENV,
    ModelFileMissing,
    fetched_model_file,
    model_dir,
)
from videodag_service.plugins.ssdlite.anchors import generate_anchors
from videodag_service.plugins.ssdlite.boxes import decode_boxes, select_boxes
from videodag_service.plugins.ssdlite.model import FROZEN_GRAPH_FILE, TEXT_GRAPH_FILE
from videodag_service.plugins.ssdlite.textgraph import (
    INPUT_NAME,
    TextGraphError,
    format_text_graph,
    parse_text_graph,
    prune_to_detector_heads,
    write_text_graph,
)

SSD_GRIDS = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _node(name: str, op: str, *inputs: str, attr: str = "") -> str:
    lines = ["node {", f'  name: "{name}"', f'  op: "{op}"', *(f'  input: "{i}"' for i in inputs)]
    if attr:
        lines += ["  attr {", f'    key: "{attr}"', "    value {", '      s: "NHWC"', "    }", "  }"]
    return "\n".join([*lines, "}"])


TOY_GRAPH = "\n".join(
    [
        _node("image_tensor", "Placeholder"),
        _node("Preprocessor/sub", "Sub", "image_tensor", "Preprocessor/sub/y"),
        _node("FeatureExtractor/input", "Identity", "Preprocessor/sub"),
        _node("conv/weights", "Const"),
        _node("conv/weights/read", "Identity", "conv/weights"),
        _node("conv/Conv2D", "Conv2D", "FeatureExtractor/input", "conv/weights/read", attr="data_format"),
        _node("BoxPredictor_0/BoxEncodingPredictor/BiasAdd", "BiasAdd", "conv/Conv2D", "^conv/weights"),
        _node("BoxPredictor_0/ClassPredictor/BiasAdd", "BiasAdd", "conv/Conv2D"),
        _node("Postprocessor/Decode", "Exp", "BoxPredictor_0/BoxEncodingPredictor/BiasAdd"),
        "library {\n}",
    ]
)


def test_prune_keeps_only_the_network_between_input_and_heads() -> None:
    nodes = prune_to_detector_heads(parse_text_graph(TOY_GRAPH))
    by_name = {node.name: node for node in nodes}

    assert nodes[0].name == INPUT_NAME and nodes[0].op == "Placeholder"
    assert set(by_name) == {
        INPUT_NAME,
        "conv/Conv2D",
        "BoxPredictor_0/BoxEncodingPredictor/BiasAdd",
        "BoxPredictor_0/ClassPredictor/BiasAdd",
    }
    # Identity bypassed, the preprocessor output replaced by the placeholder, Const left to the .pb.
    assert by_name["conv/Conv2D"].inputs == [INPUT_NAME, "conv/weights"]
    # Control inputs dropped.
    assert by_name["BoxPredictor_0/BoxEncodingPredictor/BiasAdd"].inputs == ["conv/Conv2D"]
    # Execution order: every input defined before use.
    position = {node.name: i for i, node in enumerate(nodes)}
    for node in nodes:
        for name in node.inputs:
            if name in position:
                assert position[name] < position[node.name]


def test_formatted_graph_parses_back_with_its_attributes() -> None:
    pruned = prune_to_detector_heads(parse_text_graph(TOY_GRAPH))
    again = parse_text_graph(format_text_graph(pruned))

    assert [(n.name, n.op, n.inputs, n.attr_blocks) for n in again] == [
        (n.name, n.op, n.inputs, n.attr_blocks) for n in pruned
    ]
    conv = next(n for n in again if n.name == "conv/Conv2D")
    assert any('key: "data_format"' in line for line in conv.attr_blocks[0])


def test_prune_refuses_a_graph_without_predictor_heads() -> None:
    graph = "\n".join([_node("Preprocessor/sub", "Sub"), _node("conv", "Conv2D", "Preprocessor/sub")])
    with pytest.raises(TextGraphError, match="BoxPredictor"):
        prune_to_detector_heads(parse_text_graph(graph))


def test_prune_refuses_heads_that_bypass_the_preprocessor() -> None:
    graph = TOY_GRAPH.replace(
        'name: "BoxPredictor_0/ClassPredictor/BiasAdd"\n  op: "BiasAdd"\n  input: "conv/Conv2D"',
        'name: "BoxPredictor_0/ClassPredictor/BiasAdd"\n  op: "BiasAdd"\n  input: "image_tensor"',
    )
    assert graph != TOY_GRAPH
    with pytest.raises(TextGraphError, match="image_tensor"):
        prune_to_detector_heads(parse_text_graph(graph))


def test_real_text_graph_loads_in_opencv(tmp_path: Path) -> None:
    frozen_graph = fetched_model_file(FROZEN_GRAPH_FILE)
    text_graph = tmp_path / "graph.pbtxt"

    heads = write_text_graph(frozen_graph, text_graph)

    assert len(heads) == 12
    nodes = parse_text_graph(text_graph.read_text())
    assert not [node for node in nodes if node.op in {"Const", "Identity"}]
    assert not [node for node in nodes if node.name.startswith(("Preprocessor/", "Postprocessor/"))]
    net = cv2.dnn.readNetFromTensorflow(str(frozen_graph), str(text_graph))
    net.setInput(np.zeros((1, 3, 300, 300), dtype=np.float32))
    names = list(net.getUnconnectedOutLayersNames())
    outputs = dict(zip(names, net.forward(names), strict=True))
    encodings = [out for name, out in outputs.items() if "BoxEncodingPredictor" in name]
    assert sorted(out.shape[2:] for out in encodings) == sorted(SSD_GRIDS)
    assert sum(out.shape[1] // 4 * out.shape[2] * out.shape[3] for out in encodings) == 1917
    # The installed copy is the same as a fresh one: fetch_models writes this module's output.
    assert text_graph.read_text() == fetched_model_file(TEXT_GRAPH_FILE).read_text()


def test_anchors_match_the_models_own_anchor_constants() -> None:
    anchors = generate_anchors(SSD_GRIDS)

    assert anchors.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4) == (1917, 4)
    # First cell of the first layer: centre (0.5/19, 0.5/19); scales 0.1, 0.2, 0.2; ratios 1, 2, 0.5.
    first = anchors[:3]
    np.testing.assert_allclose(first[:, :2], 0.5 / 19, rtol=1e-6)
    np.testing.assert_allclose(first[:, 2], [0.1, 0.2 / math.sqrt(2), 0.2 / math.sqrt(0.5)], rtol=1e-5)
    np.testing.assert_allclose(first[:, 3], [0.1, 0.2 * math.sqrt(2), 0.2 * math.sqrt(0.5)], rtol=1e-5)
    # Second layer's first cell: the graph's constants are scale 0.35 x5 and 0.41833 (interpolated).
    second = anchors[19 * 19 * 3 : 19 * 19 * 3 + 6]
    ratios = np.array([1.0, 2.0, 0.5, 3.0, 0.3333, 1.0])
    scales = np.array([0.35] * 5 + [0.41833])
    np.testing.assert_allclose(second[:, 3], scales * np.sqrt(ratios), rtol=1e-4)
    np.testing.assert_allclose(second[:, 0], 0.05, rtol=1e-6)
    # Last layer: one cell at the centre, scales 0.95 x5 and 0.9746794.
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, 0.9746794, 0.9746794], rtol=1e-5)
    # Row-major over the grid: the second anchor cell of layer 0 moves along x, not y.
    np.testing.assert_allclose(anchors[3, :2], [0.5 / 19, 1.5 / 19], rtol=1e-6)


def test_decode_inverts_the_box_coder() -> None:
    anchors = np.array([[0.5, 0.4, 0.2, 0.1], [0.3, 0.3, 0.1, 0.1]], dtype=np.float32)
    encodings = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, 5 * math.log(2), 0.0]], dtype=np.float32)

    boxes = decode_boxes(encodings, anchors)

    np.testing.assert_allclose(boxes[0], [0.35, 0.4, 0.45, 0.6], atol=1e-6)
    # Moved one anchor height down, one anchor width left, twice as tall.
    np.testing.assert_allclose(boxes[1], [0.15, 0.3, 0.25, 0.5], atol=1e-6)


def test_select_boxes_applies_threshold_area_and_nms() -> None:
    boxes = np.array(
        [[10, 10, 50, 110], [12, 12, 52, 112], [200, 10, 240, 110], [300, 300, 305, 305], [400, 0, 440, 100]],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.2], dtype=np.float32)

    kept = select_boxes(boxes, scores, score_threshold=0.4, iou_threshold=0.5, min_box_area=100, max_detections=10)

    assert kept.tolist() == [0, 2]


def test_select_boxes_caps_what_nms_keeps_not_the_candidates() -> None:
    """Three candidates of one person and two other people, capped at two: the best person and the
    best other one, not one box (the cap counting the suppressed duplicates)."""
    boxes = np.array(
        [[10, 10, 50, 110], [11, 10, 51, 110], [10, 11, 50, 111], [200, 10, 240, 110], [400, 0, 440, 100]],
        dtype=np.float32,
    )
    scores = np.array([0.99, 0.98, 0.97, 0.9, 0.8], dtype=np.float32)

    def kept(max_detections: int) -> list[int]:
        return select_boxes(
            boxes, scores, score_threshold=0.4, iou_threshold=0.5, min_box_area=0, max_detections=max_detections
        ).tolist()

    assert [kept(count) for count in (0, 1, 2, 3, 10)] == [[], [0], [0, 3], [0, 3, 4], [0, 3, 4]]


def test_select_boxes_keeps_a_score_equal_to_the_threshold() -> None:
    boxes = np.array([[10, 10, 50, 110], [200, 10, 240, 110], [400, 0, 440, 100]], dtype=np.float32)
    scores = np.array([0.4, 0.3999, 0.7], dtype=np.float32)

    kept = select_boxes(boxes, scores, score_threshold=0.4, iou_threshold=0.5, min_box_area=0, max_detections=10)

    assert kept.tolist() == [2, 0]


def test_model_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    assert model_dir() == tmp_path
    monkeypatch.setenv(MODEL_DIR_ENV, "")
    assert model_dir() == DEFAULT_MODEL_DIR.expanduser()
    monkeypatch.delenv(MODEL_DIR_ENV)
    assert model_dir() == Path.home() / ".cache" / "videodag" / "models"


def test_missing_file_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError) as raised:
        fetched_model_file(FROZEN_GRAPH_FILE)

    assert isinstance(raised.value, ModelFileMissing)
    message = str(raised.value)
    assert "python -m videodag_service.fetch_models" in message
    assert str(tmp_path / FROZEN_GRAPH_FILE) in message
