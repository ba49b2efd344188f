"""Each built-in tool declares the range of its numbers, which the loader checks, and checks what a
range cannot say when a pipeline loads, with the rules its `open` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import params_as_loaded
from videodag_service.dag import PluginRegistry, Tool, builtin_plugins, load_pipeline_file
from videodag_service.dag.loader import PipelineFileError
from videodag_service.plugins.models import MODEL_DIR_ENV

# Tools whose parameters need no check beyond their declarations.
UNCHECKED = {"stats.frame_stats", "rapidocr.detect_text", "rapidocr.recognize_text"}
# Numbers with no range to declare: a learning rate's rule has a hole.
UNBOUNDED_NUMBERS = {"motion.foreground_blobs.learning_rate"}


def builtin_tool(reference: str) -> Tool:
    plugin_name, tool_name = reference.split(".")
    tool = PluginRegistry(builtin_plugins()).tool(plugin_name, tool_name)
    assert tool is not None
    return tool


def as_loaded(tool: Tool, model_file: Path, **given: Any) -> dict[str, Any]:
    """The tool's parameters as the loader hands them over, naming a file that is there for a model_path."""
    if any(param.name == "model_path" for param in tool.params):
        given = {"model_path": str(model_file), **given}
    return params_as_loaded(tool, **given)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"only looked for")
    return path


def test_the_builtin_tools_with_rules_beyond_their_declarations_check_them_at_load() -> None:
    references = {f"{plugin.name}.{tool.name}": tool for plugin in builtin_plugins() for tool in plugin.tools}
    assert {reference for reference, tool in references.items() if tool.check_params is None} == UNCHECKED


def test_every_builtin_number_declares_its_range_or_is_known_to_have_none() -> None:
    unbounded = {
        f"{plugin.name}.{tool.name}.{param.name}"
        for plugin in builtin_plugins()
        for tool in plugin.tools
        for param in tool.params
        if param.kind in (int, float) and param.allowed_range is None
    }
    assert unbounded == UNBOUNDED_NUMBERS


@pytest.mark.parametrize(
    ("reference", "bad"),
    [
        ("motion.foreground_blobs", {"learning_rate": 1.0}),
        ("hog.detect_people", {"win_stride": 12}),
        ("yolo.detect", {"class_names": [1]}),
        ("bytetrack.track", {"track_low_thresh": 0.9, "track_high_thresh": 0.5}),
    ],
)
def test_open_refuses_what_the_check_refuses_with_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_file: Path, reference: str, bad: dict[str, Any]
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))
    tool = builtin_tool(reference)
    assert tool.check_params is not None
    params = as_loaded(tool, model_file, **bad)
    with pytest.raises(ValueError) as checked:
        tool.check_params(params)
    with pytest.raises(ValueError) as opened:
        tool.open(params)
    assert str(checked.value) == str(opened.value)
    for name in bad:
        assert name in str(checked.value)


@pytest.mark.parametrize(
    "reference", ["motion.foreground_blobs", "hog.detect_people", "ssdlite.detect_people", "yolo.detect",
                  "bytetrack.track"],
)
def test_the_defaults_pass_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_file: Path,
                                     reference: str) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))  # ssdlite's model is not looked for
    tool = builtin_tool(reference)
    assert tool.check_params is not None
    tool.check_params(as_loaded(tool, model_file))


def test_the_loader_reports_every_value_out_of_range_of_a_node(tmp_path: Path) -> None:
    path = tmp_path / "tracked.yaml"
    path.write_text(
        'id: tracked\nversion: "1"\nnodes:\n'
        "  - id: find\n    plugin: hog.detect_people\n    inputs: {image: frame.image}\n"
        "  - id: track\n    plugin: bytetrack.track\n"
        "    params: {match_thresh: 7, track_buffer: -1, frame_rate: 0}\n"
        "    inputs: {detections: find.detections}\n"
        "outputs:\n  tracks: track.tracks\n"
    )
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, PluginRegistry(builtin_plugins()))
    assert [problem.split(f"{path}: node 'track': ", 1)[1] for problem in caught.value.problems] == [
        "parameter 'match_thresh' must be in [0, 1], got 7: largest 1 - IoU cost (score-fused) accepted in the "
        "first association",
        "parameter 'track_buffer' must be >= 0, got -1: frames the tracker sees (at frame_rate 30) a lost track "
        "is kept and can come back with its id; a run's frame_stride makes that longer in video time",
        "parameter 'frame_rate' must be >= 1, got 0: frames per second the tracker sees; track_buffer is scaled "
        "by frame_rate / 30",
    ]


def test_yolo_reports_a_model_path_naming_no_file_only_at_its_check_and_open(tmp_path: Path) -> None:
    tool = builtin_tool("yolo.detect")
    assert tool.check_params is not None
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(ValueError, match=r"model file .*nowhere\.onnx' not found: yolo\.detect's model_path"):
        tool.check_params(params_as_loaded(tool, model_path=str(missing)))
    with pytest.raises(ValueError) as caught:
        tool.check_params(params_as_loaded(tool, model_path=""))
    assert str(caught.value) == "yolo.detect needs model_path: the path of a YOLO ONNX model file"
