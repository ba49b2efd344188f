"""The loader refuses what would load and then fail later: on a client's ListPipelines, on every
run's first frame, or silently (a key given twice, a folder with nothing in it)."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import make_registry
from videodag_service.convert import pipeline_to_proto
from videodag_service.dag import (
    DagPipelineService,
    InvalidParams,
    Param,
    Plugin,
    PluginRegistry,
    Port,
    Tool,
    default_registry,
    function_tool,
    load_pipeline_file,
    load_pipeline_folder,
)
from videodag_service.dag.loader import PipelineFileError
from videodag_service.errors import NodeFailed
from videodag_service.plugins.models import MODEL_DIR_ENV

# One node per line, so each test swaps a line or two.
BASE = """
id: {id}
version: "1"
nodes:
  - id: count
    plugin: test.counter
    params: {{fail_on: []}}
    inputs: {{index: frame.index}}
  - id: total
    plugin: test.add
    inputs: {{left: count.count, right: frame.index}}
outputs:
  total: total.sum
"""


def write(folder: Path, name: str, text: str, suffix: str = ".yaml") -> Path:
    path = folder / f"{name}{suffix}"
    path.write_text(textwrap.dedent(text))
    return path


def problems_in(path: Path, registry: PluginRegistry | None = None) -> list[str]:
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, registry or make_registry())
    assert all(str(path) in problem for problem in caught.value.problems)
    return caught.value.problems


def edited(old: str, new: str, pipeline_id: str = "edited") -> str:
    text = BASE.format(id=pipeline_id)
    assert old in text
    return text.replace(old, new, 1)


def one_node(plugin: str, params: str, inputs: str = "{image: frame.image}", output: str = "detections") -> str:
    return f"""
    id: checked
    version: "1"
    nodes:
      - id: n
        plugin: {plugin}
        params: {params}
        inputs: {inputs}
    outputs:
      out: n.{output}
    """


# --- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("wiring", "where", "forms"), [
    ("  total: total.sum\n  seen: nowhere", "output 'seen'", "'<node>.<output>'"),
    ("  total: total.sum\n  seen: a.b.c", "output 'seen'", "'<node>.<output>'"),
])
def test_a_malformed_output_source_is_told_the_form_outputs_take(
    tmp_path: Path, wiring: str, where: str, forms: str
) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited("  total: total.sum", wiring)))
    assert problem.endswith(f"{where} must be {forms}, got {wiring.split(': ')[-1]!r}")


@pytest.mark.parametrize("field", ["index", "timestamp", "image"])
def test_an_output_wired_to_the_frame_is_refused(tmp_path: Path, field: str) -> None:
    text = edited("  total: total.sum", f"  total: total.sum\n  seen: frame.{field}")
    (problem,) = problems_in(write(tmp_path, "edited", text))
    assert f"output 'seen' must come from a node ('<node>.<output>'), not 'frame.{field}'" in problem
    assert "frame_index and timestamp are in every frame's result already" in problem


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ("{1: total.sum}", "output name 1 must be a string, got int"),
        ("{'': total.sum}", "output name must not be empty"),
        ("{errors: total.sum}", "output name 'errors' is not allowed (reserved: errors)"),
    ],
)
def test_each_bad_output_name_has_its_own_message(tmp_path: Path, outputs: str, expected: str) -> None:
    text = edited("outputs:\n  total: total.sum", f"outputs: {outputs}")
    (problem,) = problems_in(write(tmp_path, "edited", text))
    assert problem.endswith(expected)


# --- parameter values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{fail_on: [2024-01-01]}", "[0] is date 2024-01-01"),
        ("{fail_on: [1, [2, 2024-01-01T10:00:00]]}", "[1][1] is datetime 2024-01-01 10:00:00"),
        ("{fail_on: [!!binary aGVsbG8=]}", "[0] is bytes b'hello'"),
        ("{fail_on: [!!set {a: null}]}", "[0] is set {'a'}"),
        ("{fail_on: [{1: one}]}", "[0] has the int key 1, not a string"),
        ("{fail_on: [{a: {b: 2024-01-01}}]}", "[0]['a']['b'] is date 2024-01-01"),
        ("{fail_on: [.nan]}", "[0] is the non-finite number nan"),
        ("{delay_seconds: .inf}", "the value is the non-finite number inf"),
        ("{fail_on: &loop [1, *loop]}", "[1] holds itself (a YAML alias of an enclosing anchor)"),
    ],
)
def test_param_values_that_are_not_json_like_are_refused_naming_the_parameter(
    tmp_path: Path, params: str, expected: str
) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited("{fail_on: []}", params)))
    name = params[1:].split(":")[0]
    assert f"node 'count': parameter {name!r} must be plain JSON-like data" in problem
    assert problem.endswith(expected)


def test_a_file_nested_too_deeply_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    (problem,) = problems_in(write(tmp_path, "edited", edited("{fail_on: []}", f"{{fail_on: {deep}}}")))
    assert problem.endswith("cannot read YAML: nested too deeply")


def test_yolo_class_names_with_a_date_are_refused(tmp_path: Path) -> None:
    text = one_node("yolo.detect", "{model_path: /nowhere.onnx, class_names: [2024-01-01, person]}")
    (problem,) = problems_in(write(tmp_path, "checked", text), default_registry())
    assert "node 'n': parameter 'class_names' must be plain JSON-like data" in problem


def test_accepted_param_values_can_be_shown_to_clients(tmp_path: Path) -> None:
    text = edited("{fail_on: []}", "{fail_on: [1, 2.5, text, true, null, [3], {a: {b: [4]}}]}")
    spec = load_pipeline_file(write(tmp_path, "edited", text), make_registry())
    shown = pipeline_to_proto(spec).nodes
    assert [node.id for node in shown] == ["count", "total"]
    assert len(shown[0].params["fail_on"]) == 7


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("{fail_on: []}", "[]", "node 'count': 'params' must be a mapping of parameter name to value, got list []"),
        ("{fail_on: []}", "[fail_on]", "node 'count': 'params' must be a mapping"),
        ("{index: frame.index}", "[]", "node 'count': 'inputs' must be a mapping of input name to source, got list"),
    ],
)
def test_params_and_inputs_must_be_mappings(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = problems_in(write(tmp_path, "edited", edited(old, new)))
    assert any(expected in problem for problem in problems), problems


def test_absent_or_null_params_are_no_params(tmp_path: Path) -> None:
    spec = load_pipeline_file(write(tmp_path, "edited", edited("{fail_on: []}", "null")), make_registry())
    assert spec.nodes[0].given_params == {}
    text = edited("    params: {fail_on: []}\n", "")
    assert load_pipeline_file(write(tmp_path, "edited", text), make_registry()).nodes[0].given_params == {}


# --- the tools' own checks -------------------------------------------------------------------------


HISTORY = "frames the background model remembers"
MAX_DETECTIONS = "at most this many boxes per frame, best first"
HOG_SCORE = ("smallest detection score kept; score = sigmoid(SVM margin), 0.5 = margin 0; below 0.05 nearly every "
             "window counts and grouping merges them into a few boxes")


@pytest.mark.parametrize(
    ("plugin", "params", "expected"),
    [
        ("motion.foreground_blobs", "{history: 0}",
         [f"parameter 'history' must be in [1, 2147483647], got 0: {HISTORY}"]),
        ("motion.foreground_blobs", "{history: 3000000000}",
         [f"parameter 'history' must be in [1, 2147483647], got 3000000000: {HISTORY}"]),
        (
            "motion.foreground_blobs",
            "{history: 0, downscale: 0, learning_rate: 1}",
            [
                f"parameter 'history' must be in [1, 2147483647], got 0: {HISTORY}",
                "parameter 'downscale' must be in [1, 65536], got 0: process at 1/downscale of the width and height "
                "(faster); boxes are mapped back to full-frame pixels",
                "learning_rate must be -1 (automatic) or at least 0 and below 1, got 1.0",
            ],
        ),
        ("motion.foreground_blobs", "{var_threshold: 0}",
         ["parameter 'var_threshold' must be > 0, got 0: squared Mahalanobis distance above which a pixel is "
          "foreground"]),
        ("ssdlite.detect_people", "{score_threshold: 5}",
         ["parameter 'score_threshold' must be in [0, 1], got 5: smallest detection score kept"]),
        (
            "ssdlite.detect_people",
            "{min_box_area: -1, max_detections: -2}",
            ["parameter 'min_box_area' must be in [0, 4294967296], got -1: smallest box kept, in square pixels of "
             "the frame",
             f"parameter 'max_detections' must be in [0, 2147483647], got -2: {MAX_DETECTIONS}"],
        ),
        ("ssdlite.detect_people", "{max_detections: 3000000000}",
         [f"parameter 'max_detections' must be in [0, 2147483647], got 3000000000: {MAX_DETECTIONS}"]),
        ("ssdlite.detect_people", "{iou_threshold: 0.0}",
         ["parameter 'iou_threshold' must be in (0, 1], got 0.0: boxes overlapping a better one of the same class "
          "by more than this IoU are dropped"]),
        (
            "hog.detect_people",
            "{upscale: 9, win_stride: 12}",
            ["parameter 'upscale' must be in [0.25, 4], got 9: enlarge the frame by this factor before detecting "
             "(finds smaller people)",
             "win_stride must be a multiple of 8 (the HOG block stride), got 12"],
        ),
        ("hog.detect_people", "{win_stride: 5}",
         ["parameter 'win_stride' must be in [8, 65536], got 5: window step in pixels of the enlarged frame; a "
          "multiple of 8", "win_stride must be a multiple of 8 (the HOG block stride), got 5"]),
        ("rapidocr.detect_text", "{min_score: 2, max_regions: 0}",
         ["parameter 'min_score' must be in [0, 1], got 2: drop regions whose mean text probability is below this",
          "parameter 'max_regions' must be >= 1, got 0: keep at most this many regions, the highest-scoring ones"]),
        ("hog.detect_people", "{score_threshold: 5}",
         [f"parameter 'score_threshold' must be in [0.05, 1], got 5: {HOG_SCORE}"]),
        ("hog.detect_people", "{score_threshold: 0.01}",
         [f"parameter 'score_threshold' must be in [0.05, 1], got 0.01: {HOG_SCORE}"]),
    ],
)
def test_values_a_builtin_tool_refuses_stop_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str, params: str, expected: list[str]
) -> None:
    # No model files: ranges are checked without them, and ssdlite's is only looked for at open.
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))
    output = "blobs" if plugin.startswith("motion") else "regions" if "text" in plugin else "detections"
    problems = problems_in(write(tmp_path, "checked", one_node(plugin, params, output=output)), default_registry())
    assert [problem.split("node 'n': ", 1)[1] for problem in problems] == expected


def test_bytetrack_and_recognize_text_values_stop_the_load(tmp_path: Path) -> None:
    text = """
    id: checked
    version: "1"
    nodes:
      - id: find
        plugin: rapidocr.detect_text
        inputs: {image: frame.image}
      - id: read
        plugin: rapidocr.recognize_text
        params: {padding: 3}
        inputs: {image: frame.image, regions: find.regions}
      - id: track
        plugin: bytetrack.track
        params: {match_thresh: 7}
        inputs: {detections: read.texts}
    outputs:
      tracks: track.tracks
    """
    problems = problems_in(write(tmp_path, "checked", text), default_registry())
    assert [problem.split(": node ", 1)[1] for problem in problems] == [
        "'read': parameter 'padding' must be in [0, 2], got 3: grow each region by this fraction of its height on "
        "every side before reading",
        "'track': parameter 'match_thresh' must be in [0, 1], got 7: largest 1 - IoU cost (score-fused) accepted "
        "in the first association",
    ]


def test_a_yolo_model_path_naming_no_file_stops_the_load_with_the_other_bad_values(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    text = one_node("yolo.detect", f"{{model_path: {missing}, score_threshold: 2}}")
    problems = problems_in(write(tmp_path, "checked", text), default_registry())
    assert [problem.split("node 'n': ", 1)[1] for problem in problems] == [
        "parameter 'score_threshold' must be in [0, 1], got 2: smallest detection score kept",
        f"model file {str(missing)!r} not found: yolo.detect's model_path must name an existing YOLO ONNX file "
        "on the server",
    ]


def test_an_ssdlite_node_loads_without_the_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))
    path = write(tmp_path, "checked", one_node("ssdlite.detect_people", "{score_threshold: 0.3}"))
    assert load_pipeline_file(path, default_registry()).nodes[0].params["score_threshold"] == 0.3


def _checked_registry(check: Any, calls: list[Mapping[str, Any]]) -> PluginRegistry:
    def recording_check(params: Mapping[str, Any]) -> None:
        calls.append(dict(params))
        check(params)

    tool = function_tool(
        "scaled", lambda inputs, params: {"value": inputs["index"] * params["factor"]},
        description="index times factor",
        inputs=(Port("index"),),
        outputs=(Port("value"),),
        params=(Param("factor", int, 2), Param("label", str, "x")),
        check_params=recording_check,
    )
    return PluginRegistry([Plugin(name="checked", description="A tool with a parameter check.", tools=(tool,))])


SCALED = """
id: scaled
version: "1"
nodes:
  - id: scale
    plugin: checked.scaled
    params: {params}
    inputs: {{index: frame.index}}
outputs:
  value: scale.value
"""


def _refuse_negative(params: Mapping[str, Any]) -> None:
    if params["factor"] < 0:
        raise ValueError(f"factor must not be negative, got {params['factor']}")


def test_a_tool_check_gets_the_resolved_params_and_its_message_names_the_node(tmp_path: Path) -> None:
    calls: list[Mapping[str, Any]] = []
    registry = _checked_registry(_refuse_negative, calls)
    spec = load_pipeline_file(write(tmp_path, "scaled", SCALED.format(params="{label: y}")), registry)
    assert calls == [{"factor": 2, "label": "y"}]
    assert DagPipelineService({"scaled": spec}).run_pipeline("scaled", {"frame_index": 21}) == {"value": 42}
    (problem,) = problems_in(write(tmp_path, "scaled", SCALED.format(params="{factor: -1}")), registry)
    assert problem.endswith("scaled.yaml: node 'scale': factor must not be negative, got -1")


def test_a_tool_check_is_not_called_when_the_params_have_another_problem(tmp_path: Path) -> None:
    calls: list[Mapping[str, Any]] = []
    registry = _checked_registry(_refuse_negative, calls)
    (problem,) = problems_in(write(tmp_path, "scaled", SCALED.format(params="{factor: many}")), registry)
    assert "parameter 'factor' must be int, got str 'many'" in problem
    assert calls == []


def test_every_problem_of_an_invalid_params_error_is_reported(tmp_path: Path) -> None:
    def refuse_both(params: Mapping[str, Any]) -> None:
        raise InvalidParams(["factor is wrong", "label is wrong"])

    problems = problems_in(write(tmp_path, "scaled", SCALED.format(params="{}")), _checked_registry(refuse_both, []))
    assert [problem.split("node 'scale': ", 1)[1] for problem in problems] == ["factor is wrong", "label is wrong"]


def test_a_faulty_tool_check_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    def broken(params: Mapping[str, Any]) -> None:
        raise KeyError("nope")

    (problem,) = problems_in(write(tmp_path, "scaled", SCALED.format(params="{}")), _checked_registry(broken, []))
    assert problem.endswith("node 'scale': checking the parameters of scaled failed: KeyError: 'nope'")


def test_a_node_that_cannot_open_says_so_rather_than_naming_a_frame(tmp_path: Path) -> None:
    def refuse(params: Mapping[str, Any]) -> Any:
        raise FileNotFoundError("weights.bin is not there")

    tool = Tool(name="heavy", description="Cannot open.", inputs=(Port("index"),), outputs=(Port("value"),),
                open=refuse)
    registry = PluginRegistry([Plugin(name="broken", description="Cannot open.", tools=(tool,))])
    text = SCALED.replace("checked.scaled", "broken.heavy").format(params="{}")
    service = DagPipelineService(load_pipeline_folder(write(tmp_path, "scaled", text).parent, registry))
    with pytest.raises(NodeFailed) as caught:
        service.run_pipeline("scaled", {"frame_index": 0})
    error = caught.value
    assert error.message == (
        "pipeline 'scaled' node 'scale' (broken.heavy) could not be opened for the run: "
        "FileNotFoundError: weights.bin is not there"
    )
    assert (error.status_code, error.reason, error.frame_index) == ("INTERNAL", "NODE_FAILED", None)


def test_a_node_failing_on_a_frame_still_names_the_frame() -> None:
    error = NodeFailed("p", "n", "a.b", 3, "boom")
    assert error.message == "pipeline 'p' node 'n' (a.b) failed on frame 3: boom"


# --- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('version: "1"', 'version: "1"\n1: one', ": key 1 must be a string, got int"),
        ("{fail_on: []}", "{1: true, fail_on: []}", "node 'count': parameter name 1 must be a string, got int"),
        ("{index: frame.index}", "{index: frame.index, 2: frame.index}",
         "node 'count': input name 2 must be a string, got int"),
        ("    plugin: test.counter", "    plugin: test.counter\n    3: x", "node 'count': key 3 must be a string"),
        ("{fail_on: []}", "{null: 1, true: 2, fail_on: []}", "node 'count': parameter name True must be a string"),
    ],
)
def test_keys_that_are_not_strings_are_problems_not_crashes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = problems_in(write(tmp_path, "edited", edited(old, new)))
    assert any(problem.endswith(expected) or expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("{fail_on: []}", "{fail_on: [], fail_on: [1]}", "duplicate key 'fail_on' on line 7 (first given on line 7)"),
        ("  total: total.sum", "  total: total.sum\n  total: count.count",
         "duplicate key 'total' on line 14 (first given on line 13)"),
        ("  - id: total\n", "  - id: total\n    id: other\n", "duplicate key 'id' on line 10 (first given on line 9)"),
    ],
)
def test_duplicate_keys_are_refused_with_their_lines(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = problems_in(write(tmp_path, "edited", edited(old, new)))
    assert any(problem.endswith(expected) for problem in problems), problems


def test_keys_brought_in_by_a_merge_may_be_overridden(tmp_path: Path) -> None:
    text = edited("{fail_on: []}", "{<<: {fail_on: [1], delay_seconds: 0}, fail_on: [2]}")
    spec = load_pipeline_file(write(tmp_path, "edited", text), make_registry())
    assert spec.nodes[0].params["fail_on"] == [2]


# --- the folder ------------------------------------------------------------------------------------


def test_a_folder_with_no_pipeline_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a pipeline")
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_folder(tmp_path, make_registry())
    assert caught.value.problems == [f"no pipeline files (*.yaml, *.yml) in {tmp_path}"]


def test_pipeline_file_suffixes_match_in_any_case(tmp_path: Path) -> None:
    write(tmp_path, "upper", BASE.format(id="upper"), suffix=".YAML")
    write(tmp_path, "mixed", BASE.format(id="mixed"), suffix=".Yml")
    assert sorted(load_pipeline_folder(tmp_path, make_registry())) == ["mixed", "upper"]


def test_hidden_files_are_skipped_even_dangling_editor_locks(tmp_path: Path) -> None:
    write(tmp_path, "good", BASE.format(id="good"))
    (tmp_path / ".#good.yaml").symlink_to(tmp_path / "user@host.1234")  # as Emacs leaves it: dangling
    write(tmp_path, ".hidden", "id: [broken")
    assert list(load_pipeline_folder(tmp_path, make_registry())) == ["good"]


def test_what_the_folder_holds_beside_its_pipeline_files_is_said_to_be_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pipeline written as JSON, mine.json, was not served, and nothing said so: its callers got
    NOT_FOUND from a server that had started without a word of it."""
    write(tmp_path, "good", BASE.format(id="good"))
    (tmp_path / "mine.json").write_text('{"id": "mine"}')
    (tmp_path / "older").mkdir()
    write(tmp_path, ".hidden", "id: [broken")
    with caplog.at_level(logging.WARNING, logger="videodag_service.dag.loader"):
        assert list(load_pipeline_folder(tmp_path, make_registry())) == ["good"]
    assert [record.getMessage() for record in caplog.records] == [
        f"pipeline folder {tmp_path}: {name} is not read: only its *.yaml and *.yml files are pipelines"
        for name in ("mine.json", "older")
    ]


def test_a_folder_with_only_hidden_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".#good.yaml").symlink_to(tmp_path / "user@host.1234")
    with pytest.raises(PipelineFileError, match=r"no pipeline files \(\*\.yaml, \*\.yml\)"):
        load_pipeline_folder(tmp_path, make_registry())


# --- version and ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.10", ".nan", "2.0", ".inf"])
def test_a_float_version_is_refused_with_a_hint_to_quote_it(tmp_path: Path, version: str) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited('version: "1"', f"version: {version}")))
    assert "'version' must be a string or an int, got the number" in problem
    assert 'quote it, as in version: "1.10"' in problem


@pytest.mark.parametrize(("version", "expected"), [('"1.10"', "1.10"), ("3", "3"), ("v2", "v2")])
def test_a_string_or_int_version_is_served_as_written(tmp_path: Path, version: str, expected: str) -> None:
    spec = load_pipeline_file(write(tmp_path, "edited", edited('version: "1"', f"version: {version}")),
                              make_registry())
    assert spec.version == expected


@pytest.mark.parametrize(("version", "read_as"), [("010", 8), ("0x10", 16), ("1:20", 80), ("1_000", 1000)])
def test_an_int_version_yaml_reads_otherwise_is_refused_with_a_hint_to_quote_it(
    tmp_path: Path, version: str, read_as: int
) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited('version: "1"', f"version: {version}")))
    assert problem.endswith(f"'version' {version} reads as the number {read_as} in YAML: quote it, as in "
                            f"version: \"{version}\"")


@pytest.mark.parametrize("merge", [
    "<<: {version: 010}",
    "<<: [{id: x}, {version: 010}]",
    "<<: {version: 1}\n<<: {version: 010}",  # of two merge keys, YAML keeps the last one's
    "<<: [{version: 1}, {version: 010}]",
])
def test_an_int_version_a_merge_brings_in_is_refused_too(tmp_path: Path, merge: str) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited('version: "1"', merge)))
    assert problem.endswith("'version' 010 reads as the number 8 in YAML: quote it, as in version: \"010\"")


@pytest.mark.parametrize(("merge", "expected"), [
    ("<<: {version: 010}\n<<: {version: 8}", "8"),
    ("<<: [{version: 010}, {version: 3}]", "3"),
])
def test_a_version_a_merge_overrides_is_not_held_against_the_file(tmp_path: Path, merge: str, expected: str) -> None:
    spec = load_pipeline_file(write(tmp_path, "edited", edited('version: "1"', merge)), make_registry())
    assert spec.version == expected


def test_a_version_of_its_own_overrides_one_a_merge_brings_in(tmp_path: Path) -> None:
    spec = load_pipeline_file(write(tmp_path, "edited", edited('version: "1"', '<<: {version: 010}\nversion: "2"')),
                              make_registry())
    assert spec.version == "2"


@pytest.mark.parametrize(("version", "expected"), [("true", "got bool True"), ("[1]", "got list [1]")])
def test_a_version_of_another_type_is_refused(tmp_path: Path, version: str, expected: str) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited('version: "1"', f"version: {version}")))
    assert problem.endswith(f"'version' must be a string such as \"1.0.0\" or an int, {expected}")


def test_a_too_long_pipeline_id_is_told_the_limit(tmp_path: Path) -> None:
    long_id = "a" * 129
    (problem,) = problems_in(write(tmp_path, long_id, BASE.format(id=long_id)))
    assert "'id' has 129 characters" in problem
    assert "pipeline ids have at most 128" in problem
    assert "must match" not in problem


def test_an_unquoted_numeric_id_is_told_to_quote_it(tmp_path: Path) -> None:
    (problem,) = problems_in(write(tmp_path, "123", BASE.format(id=123)))
    assert "'id' must be a string, got the number 123: quote it" in problem


def test_an_upper_case_file_name_is_told_file_names_are_lowercase(tmp_path: Path) -> None:
    (problem,) = problems_in(write(tmp_path, "Mixed_case", BASE.format(id="mixed_case"), suffix=".YAML"))
    assert "must equal the file name 'Mixed_case' (file names are lowercase like ids: mixed_case.yaml)" in problem


def test_a_too_long_node_id_is_told_the_limit(tmp_path: Path) -> None:
    long_id = "n" * 65
    text = edited("  - id: count", f"  - id: {long_id}").replace("count.count", f"{long_id}.count")
    (problem,) = problems_in(write(tmp_path, "edited", text))
    assert "nodes[0]: 'id' has 65 characters" in problem
    assert "node ids have at most 64" in problem


@pytest.mark.parametrize("pipeline_id", ["..", ".", "-x", "_x", ".hidden"])
def test_a_pipeline_id_must_start_with_a_letter_or_digit(tmp_path: Path, pipeline_id: str) -> None:
    (problem,) = problems_in(write(tmp_path, pipeline_id, BASE.format(id=repr(pipeline_id))))
    assert problem.endswith(f"'id' must start with a letter or digit, got {pipeline_id!r}")


@pytest.mark.parametrize("node_id", ["-x", "_", "__init"])
def test_a_node_id_must_start_with_a_letter_or_digit(tmp_path: Path, node_id: str) -> None:
    text = edited("  - id: count", f"  - id: {node_id!r}").replace("count.count", f"{node_id}.count")
    (problem,) = problems_in(write(tmp_path, "edited", text))
    assert problem.endswith(f"nodes[0]: 'id' must start with a letter or digit, got {node_id!r}")


@pytest.mark.parametrize("pipeline_id", ["7up", "a", "x.y-z_1", "a" * 128])
def test_ids_starting_with_a_letter_or_digit_still_load(tmp_path: Path, pipeline_id: str) -> None:
    assert load_pipeline_file(write(tmp_path, pipeline_id, BASE.format(id=pipeline_id)), make_registry()).id


# --- follow-up errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("plugin: test.counter", "plugin: nope.counter", "node 'count': unknown plugin 'nope'"),
        ("plugin: test.counter", "plugin: test.nothing", "node 'count': plugin 'test' has no tool 'nothing'"),
        ("    plugin: test.counter", "    plugin: test.counter\n    on_error: retry",
         "node 'count': 'on_error' must be one of fail, skip"),
    ],
)
def test_a_node_refused_for_its_own_problem_is_not_also_a_missing_node(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = edited(old, new) + "  seen: count.count\n"
    problems = problems_in(write(tmp_path, "edited", text))
    assert any(expected in problem for problem in problems), problems
    assert not any("missing node 'count'" in problem for problem in problems), problems


def test_wiring_to_a_node_that_is_not_in_the_file_is_still_reported(tmp_path: Path) -> None:
    problems = problems_in(write(tmp_path, "edited", edited("left: count.count", "left: ghost.count")))
    assert any("node 'total': input 'left' is wired to missing node 'ghost'" in problem for problem in problems)


# --- values too large or too deep for clients, and files that are no files ---------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{fail_on: [1" + "0" * 400 + "]}", "[0] is an integer of 401 digits, too large for a number (a double)"),
        ("{fail_on: " + "[" * 21 + "]" * 21 + "}", "nests lists and mappings more than 20 deep"),
    ],
)
def test_param_values_clients_could_not_receive_are_refused(tmp_path: Path, params: str, expected: str) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited("{fail_on: []}", params)))
    assert "node 'count': parameter 'fail_on' must be plain JSON-like data" in problem
    assert problem.endswith(expected)


def test_a_float_parameter_of_a_huge_integer_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    text = edited("{fail_on: []}", "{fail_on: [], delay_seconds: 1" + "0" * 400 + "}")
    (problem,) = problems_in(write(tmp_path, "edited", text))
    assert problem.endswith("the value is an integer of 401 digits, too large for a number (a double)")


def test_an_integer_of_more_digits_than_python_reads_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited('version: "1"', "version: 1" + "0" * 5000)))
    assert problem.endswith("cannot read YAML: an integer of more than 4300 digits on line 3")


def test_a_date_yaml_cannot_build_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    (problem,) = problems_in(write(tmp_path, "edited", edited("{fail_on: []}", "{fail_on: [2024-13-45]}")))
    assert "cannot read YAML: month must be in 1..12" in problem


def test_a_dangling_link_is_said_to_point_nowhere(tmp_path: Path) -> None:
    write(tmp_path, "counting", BASE.format(id="counting"))
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "deleted.yaml")
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_folder(tmp_path, make_registry())
    assert caught.value.problems == [f"{tmp_path / 'gone.yaml'}: does not exist (a link to a file that is gone?)"]


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Nine aliases of nine aliases, eight times over: 43 million values from a 600-byte file."""
    levels = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    text = edited("{fail_on: []}", "{fail_on: *a8}").replace("nodes:", "x-anchors:\n" + "\n".join(
        f"  {level}" for level in levels) + "\nnodes:")
    path = write(tmp_path, "edited", text.replace("x-anchors:", "description: bomb\nx-anchors:"))
    problems = problems_in(path)
    assert any("parameter 'fail_on' must be plain JSON-like data" in problem
               and "takes it over 100000 values (YAML aliases expanded" in problem for problem in problems)


@pytest.mark.parametrize("kind", ["image", "jpeg"])
def test_an_output_of_an_image_or_jpeg_port_is_refused(tmp_path: Path, kind: str) -> None:
    tool = function_tool("frame", lambda inputs, params: {"out": inputs["image"]}, description="the frame itself",
                         inputs=(Port("image", "frame", kind="image"),), outputs=(Port("out", "a frame", kind=kind),))
    registry = PluginRegistry([Plugin(name="pictures", description="frames", tools=(tool,))])
    text = one_node("pictures.frame", "{}", output="out")
    (problem,) = problems_in(write(tmp_path, "checked", text), registry)
    assert f"output 'out' cannot be n.out, which gives {kind} (" in problem
    assert "results are JSON-like values" in problem


def test_a_pipeline_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "piped.yaml")
    write(tmp_path, "counting", BASE.format(id="counting"))
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_folder(tmp_path, make_registry())
    assert caught.value.problems == [f"{tmp_path / 'piped.yaml'}: is not a regular file"]


@pytest.mark.parametrize("word", ["on", "no", "true"])
def test_an_id_yaml_reads_as_a_boolean_is_told_to_quote_it(tmp_path: Path, word: str) -> None:
    (problem,) = problems_in(write(tmp_path, word, BASE.format(id=word)))
    assert "'id' must be a string, got " in problem
    assert 'quote it, as in id: "on"' in problem


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ('description: "Counts people \\ud83d\\udc65"', "Counts people \\ud83d\\udc65"),
        ('version: "1\\udc80"', "1\\udc80"),
        ('outputs: {"total\\ud800": total.sum}', "total\\ud800"),
    ],
    ids=["description", "version", "output-name"],
)
def test_text_holding_half_a_character_is_refused_naming_its_line(tmp_path: Path, line: str, text: str) -> None:
    """An emoji escaped as JSON escapes it: YAML reads two halves of a character, which no gRPC
    message carries, and the server could not start, naming no file."""
    source = textwrap.dedent(BASE.format(id="escaped")).replace("outputs:\n  total: total.sum\n", "")
    key = line.split(":")[0]
    source = "\n".join(row for row in source.splitlines() if not row.startswith(f"{key}:")) + "\n" + line + "\n"
    if key != "outputs":
        source += "outputs:\n  total: total.sum\n"
    problems = problems_in(write(tmp_path, "escaped", source))
    assert f'the text "{text}" holds half a character' in problems[0]
    assert "write the character itself, or as one \\U escape" in problems[0]


def test_a_character_written_as_one_escape_loads(tmp_path: Path) -> None:
    source = textwrap.dedent(BASE.format(id="escaped")) + 'description: "Counts people \\U0001F465"\n'
    spec = load_pipeline_file(write(tmp_path, "escaped", source), make_registry())
    assert spec.description == "Counts people \U0001f465"
    assert pipeline_to_proto(spec).description == spec.description


def test_a_file_given_as_the_pipeline_folder_is_called_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "counting", BASE.format(id="counting"))
    with pytest.raises(PipelineFileError, match=r"counting\.yaml: is a file, not a folder of pipeline files"):
        load_pipeline_folder(path, make_registry())


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "counting.yaml"
    text = textwrap.dedent(BASE.format(id="counting")) + "description: caf\xe9\n"
    path.write_bytes(text.encode("latin-1"))
    (problem,) = problems_in(path)
    line = text.count("\n")  # the description is the last line
    assert problem.endswith(f"cannot read YAML: line {line} is not UTF-8 (byte 0xe9): save the file as UTF-8")


def test_a_utf16_file_is_refused_as_such(tmp_path: Path) -> None:
    path = tmp_path / "counting.yaml"
    path.write_bytes(textwrap.dedent(BASE.format(id="counting")).encode("utf-16"))
    (problem,) = problems_in(path)
    assert problem.endswith("cannot read YAML: the file is UTF-16: save it as UTF-8")
