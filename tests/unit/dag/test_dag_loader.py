"""The pipeline loader refuses every kind of bad file with a message naming file, node and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fakes.fake_plugins import make_registry
from videodag_service.dag import (
    BUILTIN_PIPELINE_DIR,
    DagPipelineService,
    ErrorPolicy,
    PipelineFileError,
    default_registry,
    load_pipeline_file,
    load_pipeline_folder,
)
from videodag_service.errors import InvalidPipelineId, PipelineNotFound

VALID = """
id: {id}
version: "2.1"
description: counts and adds
nodes:
  - id: total
    plugin: test.add
    params: {{offset: 3}}
    inputs: {{left: count.count, right: frame.index}}
  - id: count
    plugin: test.counter
    inputs: {{index: frame.index}}
    on_error: skip
outputs:
  total: total.sum
  seen: count.count
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, make_registry())
    message = str(caught.value)
    assert str(path) in message
    return message


def test_valid_file_loads_in_topological_order(tmp_path: Path) -> None:
    spec = load_pipeline_file(write(tmp_path, "counting", VALID.format(id="counting")), make_registry())
    assert spec.id == "counting"
    assert spec.version == "2.1"
    assert [node.id for node in spec.nodes] == ["count", "total"]
    total = spec.nodes[1]
    assert total.params == {"offset": 3, "mode": "plain"}
    assert total.given_params == {"offset": 3}
    assert [(name, str(source)) for name, source in total.inputs] == [
        ("left", "count.count"), ("right", "frame.index")
    ]
    assert spec.nodes[0].on_error is ErrorPolicy.SKIP
    assert [(name, str(source)) for name, source in spec.outputs] == [("total", "total.sum"), ("seen", "count.count")]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("plugin: test.add", "plugin: nope.add"), "node 'total': unknown plugin 'nope' (known plugins: test)"),
        (("plugin: test.add", "plugin: test.subtract"), "node 'total': plugin 'test' has no tool 'subtract'"),
        (("plugin: test.add", "plugin: testadd"), "node 'total': 'plugin' must be 'plugin.tool'"),
        (("{offset: 3}", "{offset: 3, colour: red}"), "node 'total': unknown parameter 'colour' for add"),
        (("{offset: 3}", "{offset: three}"), "node 'total': parameter 'offset' must be int, got str 'three'"),
        (("{offset: 3}", "{offset: true}"), "node 'total': parameter 'offset' must be int, got bool"),
        (("{offset: 3}", "{mode: odd}"), "node 'total': parameter 'mode' must be one of ['plain', 'fancy']"),
        (("left: count.count, ", ""), "node 'total': input 'left' is not wired"),
        (("count.count, right", "ghost.count, right"), "node 'total': input 'left' is wired to missing node 'ghost'"),
        (("count.count, right", "count.total, right"),
         "node 'total': input 'left' is wired to missing output 'total' of node 'count'"),
        (("right: frame.index", "right: frame.pixels"), "node 'total': input 'right': the frame has no field 'pixels'"),
        (("right: frame.index", "right: frame.index, extra: frame.index"), "node 'total': unknown input 'extra'"),
        (("on_error: skip", "on_error: retry"), "node 'count': 'on_error' must be one of fail, skip"),
        (("- id: count", "- id: total"), "node 'total': duplicate node id"),
        (("seen: count.count", "errors: count.count"), "output name 'errors' is not allowed"),
        (("seen: count.count", "seen: count.missing"), "output 'seen' is wired to missing output 'missing'"),
        (('version: "2.1"', ""), "'version' is required"),
        (('version: "2.1"', 'version: " "'), "'version' is required"),
        (('version: "2.1"', 'version: "2.1\\n"'),
         "'version' must be printable text with no space around it, got '2.1\\n'"),
        (('version: "2.1"', 'version: "2.1\\u202e"'), "'version' must be printable text"),
        (("- id: count", "- plugin_typo: count"), "nodes[1]: 'id' is missing: every node needs one"),
        (("description: counts and adds", "descripton: typo"), "unknown key 'descripton'"),
    ],
)
def test_each_problem_is_reported_with_file_and_node(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    text = VALID.format(id="broken")
    assert old in text
    message = problems_of(write(tmp_path, "broken", text.replace(old, new, 1)))
    assert expected in message


def test_cycle_is_refused_naming_the_nodes(tmp_path: Path) -> None:
    text = """
    id: loop
    version: "1"
    nodes:
      - id: a
        plugin: test.add
        inputs: {left: b.sum, right: frame.index}
      - id: b
        plugin: test.add
        inputs: {left: a.sum, right: frame.index}
    outputs:
      out: a.sum
    """
    message = problems_of(write(tmp_path, "loop", text))
    assert "cycle between nodes" in message
    assert "a -> b" in message or "b -> a" in message


def test_missing_required_parameter(tmp_path: Path) -> None:
    text = """
    id: needy
    version: "1"
    nodes:
      - id: n
        plugin: test.needs
    outputs:
      out: n.out
    """
    assert "node 'n': missing required parameter 'required_value'" in problems_of(write(tmp_path, "needy", text))


@pytest.mark.parametrize("bad_id", ["Upper", "../etc/passwd", "with space", "a/b", ""])
def test_pipeline_ids_are_names_not_paths(tmp_path: Path, bad_id: str) -> None:
    text = VALID.format(id=repr(bad_id))
    assert "'id' must match [a-z0-9_.-]+" in problems_of(write(tmp_path, "named", text))


def test_a_missing_id_is_named_as_missing_with_the_id_to_give(tmp_path: Path) -> None:
    text = "\n".join(line for line in VALID.format(id="x").splitlines() if not line.startswith("id:"))
    assert "'id' is missing: give the file's name, as in id: nameless" in problems_of(write(tmp_path, "nameless", text))


def test_id_must_equal_file_name(tmp_path: Path) -> None:
    message = problems_of(write(tmp_path, "file_name", VALID.format(id="other_name")))
    assert "'id' 'other_name' must equal the file name 'file_name'" in message


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    assert "cannot read YAML" in problems_of(write(tmp_path, "garbled", "id: [unclosed"))
    assert "must be a mapping" in problems_of(write(tmp_path, "listy", "- 1\n- 2\n"))


def test_folder_reports_every_bad_file_and_loads_nothing(tmp_path: Path) -> None:
    write(tmp_path, "good", VALID.format(id="good"))
    write(tmp_path, "bad_one", VALID.format(id="bad_one").replace("test.add", "nope.add"))
    write(tmp_path, "bad_two", VALID.format(id="bad_two").replace("frame.index}", "frame.nothing}"))
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_folder(tmp_path, make_registry())
    problems = caught.value.problems
    assert any("bad_one.yaml: node 'total': unknown plugin 'nope'" in p for p in problems)
    assert any("bad_two.yaml: node 'count': input 'index': the frame has no field 'nothing'" in p for p in problems)
    assert not any("good.yaml" in p for p in problems)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError, match="does not exist"):
        load_pipeline_folder(tmp_path / "absent", make_registry())


def test_service_lookup_errors(tmp_path: Path) -> None:
    write(tmp_path, "counting", VALID.format(id="counting"))
    service = DagPipelineService(load_pipeline_folder(tmp_path, make_registry()))
    assert service.pipeline_ids() == ["counting"]
    with pytest.raises(PipelineNotFound) as caught:
        service.get_pipeline("missing")
    assert "unknown pipeline 'missing'; known pipelines: counting" in str(caught.value)
    with pytest.raises(PipelineNotFound):
        service.get_pipeline("")
    with pytest.raises(InvalidPipelineId, match="not a name"):
        service.get_pipeline("../counting")
    with pytest.raises(InvalidPipelineId, match="not a name") as caught_newline:
        service.get_pipeline("counting\n")  # a regex "$" would let the final newline by
    assert [v.field for v in caught_newline.value.details.field_violations] == ["pipeline_id"]


def test_builtin_pipelines_are_valid() -> None:
    pipelines = load_pipeline_folder(BUILTIN_PIPELINE_DIR, default_registry())
    assert {"player_tracking_v1", "yolo_ocr", "motion_v1", "frame_stats_v1"} <= set(pipelines)
    tracking = pipelines["player_tracking_v1"]
    assert [node.plugin_ref for node in tracking.nodes] == ["ssdlite.detect_people", "bytetrack.track"]
    assert tracking.nodes[1].tool.stateful
