"""Each built-in tool checks its parameter values when a pipeline loads with the rules its `open` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from videodag_service.dag import PluginRegistry, Tool, builtin_plugins
from videodag_service.dag.plugin import InvalidParams
from videodag_service.plugins.models import MODEL_DIR_ENV

# Tools whose parameters need no check beyond their types.
UNCHECKED = {"stats.frame_stats"}


def builtin_tool(reference: str) -> Tool:
    plugin_name, tool_name = reference.split(".")
    tool = PluginRegistry(builtin_plugins()).tool(plugin_name, tool_name)
    assert tool is not None
    return tool


def resolved(tool: Tool, **given: Any) -> dict[str, Any]:
    """The parameters as the loader hands them over: defaults filled in."""
    return {param.name: given.get(param.name, param.default) for param in tool.params}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"only looked for")
    return path


def test_every_builtin_tool_with_range_rules_checks_them_at_load() -> None:
    references = {f"{plugin.name}.{tool.name}": tool for plugin in builtin_plugins() for tool in plugin.tools}
    assert {reference for reference, tool in references.items() if tool.check_params is None} == UNCHECKED


@pytest.mark.parametrize(
    ("reference", "bad"),
    [
        ("motion.foreground_blobs", {"history": 0}),
        ("motion.foreground_blobs", {"var_threshold": 0.0, "downscale": 0}),
        ("hog.detect_people", {"upscale": 9.0}),
        ("hog.detect_people", {"iou_threshold": 0.0, "pyramid_scale": 1.0}),
        ("ssdlite.detect_people", {"score_threshold": 5.0}),
        ("ssdlite.detect_people", {"max_detections": -1}),
        ("yolo.detect", {"input_size": 8}),
        ("yolo.detect", {"class_names": [1], "layout": "yolov9"}),
        ("bytetrack.track", {"match_thresh": 7.0}),
        ("bytetrack.track", {"track_low_thresh": 0.9, "frame_rate": 0}),
        ("rapidocr.detect_text", {"min_score": 2.0}),
        ("rapidocr.detect_text", {"max_side_len": 8}),
        ("rapidocr.recognize_text", {"padding": 3.0, "min_confidence": -1.0}),
    ],
)
def test_open_refuses_what_the_check_refuses_with_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_file: Path, reference: str, bad: dict[str, Any]
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))
    tool = builtin_tool(reference)
    assert tool.check_params is not None
    params = resolved(tool, model_path=str(model_file), **bad)
    with pytest.raises(ValueError) as checked:
        tool.check_params(params)
    with pytest.raises(ValueError) as opened:
        tool.open(params)
    assert str(checked.value) == str(opened.value)
    for name in bad:
        assert name in str(checked.value)


@pytest.mark.parametrize(
    "reference",
    ["motion.foreground_blobs", "hog.detect_people", "ssdlite.detect_people", "yolo.detect", "bytetrack.track",
     "rapidocr.detect_text", "rapidocr.recognize_text"],
)
def test_the_defaults_pass_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_file: Path,
                                     reference: str) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))  # ssdlite's model is not looked for
    tool = builtin_tool(reference)
    assert tool.check_params is not None
    tool.check_params(resolved(tool, model_path=str(model_file)))


def test_a_check_reports_every_bad_value_of_its_node() -> None:
    tool = builtin_tool("bytetrack.track")
    assert tool.check_params is not None
    with pytest.raises(InvalidParams) as caught:
        tool.check_params(resolved(tool, match_thresh=7.0, track_buffer=-1, frame_rate=0))
    assert caught.value.problems == (
        "match_thresh must be in [0, 1], got 7.0",
        "track_buffer must be >= 0, got -1",
        "frame_rate must be > 0, got 0",
    )


def test_yolo_reports_a_model_path_naming_no_file_only_at_its_check_and_open(tmp_path: Path) -> None:
    tool = builtin_tool("yolo.detect")
    assert tool.check_params is not None
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(ValueError, match=r"model file .*nowhere\.onnx' not found: yolo\.detect's model_path"):
        tool.check_params(resolved(tool, model_path=str(missing)))
    with pytest.raises(InvalidParams) as caught:
        tool.check_params(resolved(tool, model_path=""))
    assert caught.value.problems == ("yolo.detect needs model_path: the path of a YOLO ONNX model file",)
