"""Each built-in tool declares the range of its numbers, which the loader checks, and checks what a
range cannot say when a pipeline loads, with the rules its `open` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_yolo_model import build_yolo_model

from fakes.fake_plugins import builtin_tool_pipeline, params_as_loaded
from videodag_service.dag import (
    PluginRegistry,
    Tool,
    builtin_plugins,
    default_registry,
    load_pipeline_file,
    load_pipeline_folder,
)
from videodag_service.dag.loader import PipelineFileError
from videodag_service.dag.pipeline_problems import shown
from videodag_service.plugins.detections import Detections
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
    """The tool's parameters as the loader hands them over, naming a model that loads for a model_path."""
    if any(param.name == "model_path" for param in tool.params):
        given = {"model_path": str(model_file), **given}
    return params_as_loaded(tool, **given)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A YOLO model of the default input size, which yolo.detect's check loads."""
    return build_yolo_model(tmp_path / "model.onnx", np.zeros((1, 5, 40), dtype=np.float32))


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
        "parameter 'track_buffer' must be in [0, 2147483647], got -1: frames the tracker sees (at frame_rate 30) "
        "a lost track is kept and can come back with its id; a run's frame_stride makes that longer in video time",
        "parameter 'frame_rate' must be in [1, 1000000], got 0: frames per second the tracker sees; track_buffer "
        "is scaled by frame_rate / 30",
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


# Values inside the ranges once declared that passed the load and then failed: every run at open
# (motion's downscale squared overflowed a float), the first frame a track was lost (bytetrack's
# buffer times its rate), or wrote a raw overflow warning (ssdlite's area against float32 areas).
# Each is past the maximum now declared; the maximum itself loads.
PAST_THE_MAXIMUM = [
    ("motion.foreground_blobs", "downscale", 10**300, "[1, 65536]", 65536),
    ("bytetrack.track", "track_buffer", 10**300, "[0, 2147483647]", 2**31 - 1),
    ("bytetrack.track", "frame_rate", 10**10, "[1, 1000000]", 1_000_000),
    ("ssdlite.detect_people", "min_box_area", 10**300, "[0, 4294967296]", 2**32),
]


@pytest.mark.parametrize(("reference", "name", "too_large", "allowed_range", "largest"), PAST_THE_MAXIMUM)
def test_a_value_past_the_declared_maximum_stops_the_load_naming_file_node_and_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, name: str, too_large: int, allowed_range: str,
    largest: int,
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))  # ssdlite's model is only looked for
    folder = tmp_path / "pipelines"
    folder.mkdir()
    path = folder / "huge.yaml"
    path.write_text(builtin_tool_pipeline("huge", reference, {name: too_large}))
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_folder(folder, default_registry())
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: node 'n': parameter {name!r} must be in {allowed_range}, "
                              f"got {shown(too_large)}: ")  # 10**300 cut short


@pytest.mark.parametrize(("reference", "name", "too_large", "allowed_range", "largest"), PAST_THE_MAXIMUM)
def test_the_declared_maximum_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, name: str, too_large: int, allowed_range: str,
    largest: int,
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))
    (tmp_path / "largest.yaml").write_text(builtin_tool_pipeline("largest", reference, {name: largest}))
    (node,) = [node for node in load_pipeline_folder(tmp_path, default_registry())["largest"].nodes if node.id == "n"]
    assert node.params[name] == largest


def test_motion_runs_at_its_largest_downscale() -> None:
    tool = builtin_tool("motion.foreground_blobs")
    instance = tool.open(params_as_loaded(tool, downscale=65536, min_area=0))
    frame = np.full((576, 768, 3), 90, dtype=np.uint8)
    for _ in range(3):  # the first frame seeds the background model; the others are compared with it
        outputs = instance.process({"image": frame})
    instance.close()
    assert len(outputs["blobs"]) == 0


def test_bytetrack_at_its_largest_buffer_and_rate_keeps_a_lost_track_and_its_id() -> None:
    """Both maxima give a finite count of frames a lost track is kept; the largest values before
    overflowed on the first frame a track was lost."""
    tool = builtin_tool("bytetrack.track")
    instance = tool.open(params_as_loaded(tool, track_buffer=2**31 - 1, frame_rate=1_000_000))
    person = Detections.from_lists([[100, 100, 200, 300]], [0.9], ["person"])
    nobody = Detections.from_lists([], [], [])
    seen = [instance.process({"detections": person})["tracks"] for _ in range(3)]
    for _ in range(10):
        assert len(instance.process({"detections": nobody})["tracks"]) == 0
    back = instance.process({"detections": person})["tracks"]
    instance.close()
    assert back.track_ids is not None and seen[-1].track_ids is not None
    assert len(seen[-1]) == 1
    assert list(back.track_ids) == list(seen[-1].track_ids)
