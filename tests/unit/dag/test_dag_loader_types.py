"""Port kinds: a wiring that would fail on every frame (a frame index fed to an image input) stops the
load with the file, node, input, source and both kinds named, while ports that declare no kind, as a
third-party plugin's may not, are wired as before."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import Recorder, make_test_plugin
from videodag_service.dag import (
    BUILTIN_PIPELINE_DIR,
    PORT_KINDS,
    Plugin,
    PluginRegistry,
    Port,
    builtin_plugins,
    function_tool,
    kinds_compatible,
    load_pipeline_file,
    load_pipeline_folder,
)
from videodag_service.dag.loader import PipelineFileError
from videodag_service.dag.spec import FRAME_FIELD_KINDS, FRAME_FIELDS, PipelineSpec
from videodag_service.plugins.models import MODEL_DIR_ENV

IMAGE = "image (BGR uint8 array)"
DETECTIONS = "detections (Detections: boxes, scores, labels)"


@pytest.fixture(autouse=True)
def _no_model_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinds are checked without any model file: none is looked for before a run opens."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no_models"))


def _passthrough(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": inputs["value"]}


def _kinded_plugin() -> Plugin:
    """Tools as a plugin declaring kinds writes them: a float input, an int output, a json input."""
    return Plugin(
        name="kinded",
        description="Tools with declared kinds.",
        tools=(
            function_tool("scale", _passthrough, description="Takes a number.",
                          inputs=(Port("value", "seconds", kind="float"),), outputs=(Port("value", kind="float"),)),
            function_tool("count", _passthrough, description="Gives an int.",
                          inputs=(Port("value", kind="int"),), outputs=(Port("value", kind="int"),)),
            function_tool("record", _passthrough, description="Takes any JSON-like value.",
                          inputs=(Port("value", kind="json"),), outputs=(Port("value", kind="json"),)),
        ),
    )


def _untyped_plugin() -> Plugin:
    """A third-party-style tool that declares no kinds: it takes and gives anything."""
    return Plugin(
        name="thirdparty",
        description="No kinds declared.",
        tools=(
            function_tool("passthrough", _passthrough, description="Gives back its input.",
                          inputs=(Port("value", "anything"),), outputs=(Port("value", "the same"),)),
        ),
    )


def registry() -> PluginRegistry:
    """The built-in plugins, the two above, and the engine tests' plugin, whose ports declare no kinds."""
    return PluginRegistry([*builtin_plugins(), _kinded_plugin(), _untyped_plugin(), make_test_plugin(Recorder())])


def write(folder: Path, nodes: str, outputs: str, name: str = "typed") -> Path:
    path = folder / f"{name}.yaml"
    text = f'id: {name}\nversion: "1"\nnodes:\n{textwrap.indent(textwrap.dedent(nodes).strip(), "  ")}\n'
    path.write_text(text + f"outputs:\n{textwrap.indent(textwrap.dedent(outputs).strip(), '  ')}\n")
    return path


def problems_in(path: Path) -> list[str]:
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, registry())
    assert all(problem.startswith(f"{path}: ") for problem in caught.value.problems)
    return [problem.removeprefix(f"{path}: ") for problem in caught.value.problems]


def loads(path: Path) -> PipelineSpec:
    return load_pipeline_file(path, registry())


# --- wrong wirings ---------------------------------------------------------------------------------

WRONG_WIRINGS = [
    pytest.param(
        """
        - id: stats
          plugin: stats.frame_stats
          inputs: {image: frame.index}
        """,
        "stats: stats.stats",
        f"node 'stats': input 'image' takes {IMAGE}, but frame.index gives int (an integer)",
        id="frame index into an image",
    ),
    pytest.param(
        """
        - id: track
          plugin: bytetrack.track
          inputs: {detections: frame.image}
        """,
        "tracks: track.tracks",
        f"node 'track': input 'detections' takes {DETECTIONS}, but frame.image gives {IMAGE}",
        id="frame image into detections",
    ),
    pytest.param(
        """
        - id: read
          plugin: rapidocr.recognize_text
          inputs: {image: frame.image, regions: frame.image}
        """,
        "texts: read.texts",
        f"node 'read': input 'regions' takes {DETECTIONS}, but frame.image gives {IMAGE}",
        id="frame image into OCR regions",
    ),
    pytest.param(
        """
        - id: people
          plugin: hog.detect_people
          inputs: {image: frame.image_bytes}
        """,
        "people: people.detections",
        f"node 'people': input 'image' takes {IMAGE}, but frame.image_bytes gives jpeg (JPEG-encoded bytes)",
        id="JPEG bytes into an image",
    ),
    pytest.param(
        """
        - id: stats
          plugin: stats.frame_stats
          inputs: {image: frame.timestamp}
        """,
        "stats: stats.stats",
        f"node 'stats': input 'image' takes {IMAGE}, but frame.timestamp gives float (a number)",
        id="timestamp into an image",
    ),
    pytest.param(
        """
        - id: motion
          plugin: motion.foreground_blobs
          inputs: {image: frame.image}
        - id: track
          plugin: bytetrack.track
          inputs: {detections: motion.foreground_ratio}
        """,
        "tracks: track.tracks",
        f"node 'track': input 'detections' takes {DETECTIONS}, but motion.foreground_ratio gives float (a number)",
        id="a node's float into detections",
    ),
    pytest.param(
        """
        - id: find
          plugin: rapidocr.detect_text
          inputs: {image: frame.image}
        - id: stats
          plugin: stats.frame_stats
          inputs: {image: find.regions}
        """,
        "stats: stats.stats",
        f"node 'stats': input 'image' takes {IMAGE}, but find.regions gives {DETECTIONS}",
        id="a node's detections into an image",
    ),
    pytest.param(
        """
        - id: scale
          plugin: kinded.scale
          inputs: {value: frame.timestamp}
        - id: count
          plugin: kinded.count
          inputs: {value: scale.value}
        """,
        "count: count.value",
        "node 'count': input 'value' takes int (an integer), but scale.value gives float (a number)",
        id="a float into an int",
    ),
    pytest.param(
        """
        - id: record
          plugin: kinded.record
          inputs: {value: frame.image}
        """,
        "record: record.value",
        f"node 'record': input 'value' takes json (a JSON-like value), but frame.image gives {IMAGE}",
        id="an image into json",
    ),
]


@pytest.mark.parametrize(("nodes", "outputs", "expected"), WRONG_WIRINGS)
def test_a_wiring_of_the_wrong_kind_stops_the_load_naming_input_source_and_both_kinds(
    tmp_path: Path, nodes: str, outputs: str, expected: str
) -> None:
    assert problems_in(write(tmp_path, nodes, outputs)) == [expected]


def test_every_wrong_wiring_of_a_file_is_reported_at_once_with_its_other_problems(tmp_path: Path) -> None:
    nodes = """
    - id: stats
      plugin: stats.frame_stats
      params: {include_channels: 3}
      inputs: {image: frame.index}
    - id: track
      plugin: bytetrack.track
      inputs: {detections: frame.image}
    """
    assert problems_in(write(tmp_path, nodes, "tracks: track.tracks")) == [
        "node 'stats': parameter 'include_channels' must be bool, got int 3",
        f"node 'stats': input 'image' takes {IMAGE}, but frame.index gives int (an integer)",
        f"node 'track': input 'detections' takes {DETECTIONS}, but frame.image gives {IMAGE}",
    ]


def test_a_source_refused_for_another_reason_has_no_kind_problem_besides(tmp_path: Path) -> None:
    nodes = """
    - id: motion
      plugin: motion.foreground_blobs
      inputs: {image: frame.image}
    - id: track
      plugin: bytetrack.track
      inputs: {detections: motion.ratio}
    - id: stats
      plugin: stats.frame_stats
      inputs: {image: frame.pixels}
    """
    problems = problems_in(write(tmp_path, nodes, "tracks: track.tracks"))
    assert len(problems) == 2
    assert problems[0].startswith("node 'track': input 'detections' is wired to missing output 'ratio'")
    assert problems[1].startswith("node 'stats': input 'image': the frame has no field 'pixels'")


# --- right wirings ---------------------------------------------------------------------------------


def test_every_built_in_pipeline_loads_and_each_of_its_wirings_is_checked_on_both_sides() -> None:
    pipelines = load_pipeline_folder(BUILTIN_PIPELINE_DIR, registry())
    assert pipelines
    for spec in pipelines.values():
        nodes = {node.id: node for node in spec.nodes}
        for node in spec.nodes:
            for name, source in node.inputs:
                taken = next(port.kind for port in node.tool.inputs if port.name == name)
                given = (FRAME_FIELD_KINDS[source.output] if source.is_frame
                         else next(p.kind for p in nodes[source.node].tool.outputs if p.name == source.output))
                assert taken is not None and given is not None, f"{spec.id}: {node.id}.{name} is unchecked"
                assert kinds_compatible(given, taken)


def test_every_built_in_tool_declares_the_kind_of_each_port() -> None:
    for plugin in builtin_plugins():
        for tool in plugin.tools:
            for port in (*tool.inputs, *tool.outputs):
                assert port.kind in PORT_KINDS, f"{plugin.name}.{tool.name}: {port.name} has kind {port.kind!r}"


def test_detections_flow_from_detectors_through_the_tracker_and_ocr(tmp_path: Path) -> None:
    nodes = """
    - id: people
      plugin: hog.detect_people
      inputs: {image: frame.image}
    - id: find
      plugin: rapidocr.detect_text
      inputs: {image: frame.image}
    - id: read
      plugin: rapidocr.recognize_text
      inputs: {image: frame.image, regions: people.detections}
    - id: track
      plugin: bytetrack.track
      inputs: {detections: read.texts}
    """
    spec = loads(write(tmp_path, nodes, "tracks: track.tracks\nregions: find.regions"))
    assert [node.id for node in spec.nodes][-1] == "track"


def test_an_int_feeds_a_float_input_and_numbers_feed_a_json_one(tmp_path: Path) -> None:
    nodes = """
    - id: count
      plugin: kinded.count
      inputs: {value: frame.index}
    - id: scale
      plugin: kinded.scale
      inputs: {value: count.value}
    - id: frame_scale
      plugin: kinded.scale
      inputs: {value: frame.index}
    - id: record
      plugin: kinded.record
      inputs: {value: scale.value}
    - id: record_count
      plugin: kinded.record
      inputs: {value: frame.index}
    - id: stats
      plugin: stats.frame_stats
      inputs: {image: frame.image}
    - id: record_stats
      plugin: kinded.record
      inputs: {value: stats.stats}
    """
    outputs = "a: scale.value\nb: frame_scale.value\nc: record.value\nd: record_count.value\ne: record_stats.value"
    spec = loads(write(tmp_path, nodes, outputs))
    assert len(spec.nodes) == 7


@pytest.mark.parametrize(
    ("given", "taken", "compatible"),
    [
        ("image", "image", True),
        ("int", "float", True),
        ("float", "int", False),
        ("int", "json", True),
        ("float", "json", True),
        ("json", "json", True),
        ("json", "int", False),
        ("detections", "json", False),
        ("jpeg", "image", False),
        ("image", "jpeg", False),
        (None, "image", True),
        ("image", None, True),
        (None, None, True),
    ],
)
def test_the_compatibility_rule(given: str | None, taken: str | None, compatible: bool) -> None:
    assert kinds_compatible(given, taken) is compatible


# --- ports without a kind --------------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(FRAME_FIELDS))
def test_an_untyped_input_takes_every_frame_field_and_its_output_feeds_every_typed_input(
    tmp_path: Path, field: str
) -> None:
    nodes = f"""
    - id: any
      plugin: thirdparty.passthrough
      inputs: {{value: frame.{field}}}
    - id: stats
      plugin: stats.frame_stats
      inputs: {{image: any.value}}
    - id: track
      plugin: bytetrack.track
      inputs: {{detections: any.value}}
    - id: read
      plugin: rapidocr.recognize_text
      inputs: {{image: any.value, regions: any.value}}
    - id: scale
      plugin: kinded.scale
      inputs: {{value: any.value}}
    """
    assert len(loads(write(tmp_path, nodes, "tracks: track.tracks\ntexts: read.texts")).nodes) == 5


@pytest.mark.parametrize(
    "source", ["frame.image", "stats.stats", "find.regions", "motion.foreground_ratio", "motion.blobs"]
)
def test_an_untyped_input_takes_every_built_in_output(tmp_path: Path, source: str) -> None:
    nodes = f"""
    - id: stats
      plugin: stats.frame_stats
      inputs: {{image: frame.image}}
    - id: find
      plugin: rapidocr.detect_text
      inputs: {{image: frame.image}}
    - id: motion
      plugin: motion.foreground_blobs
      inputs: {{image: frame.image}}
    - id: any
      plugin: thirdparty.passthrough
      inputs: {{value: {source}}}
    """
    assert len(loads(write(tmp_path, nodes, "value: any.value")).nodes) == 4


def test_the_engine_tests_plugin_without_kinds_loads_in_any_wiring(tmp_path: Path) -> None:
    nodes = """
    - id: size
      plugin: test.size
      inputs: {data: frame.image}
    - id: add
      plugin: test.add
      inputs: {left: frame.image_bytes, right: size.length}
    - id: stats
      plugin: stats.frame_stats
      inputs: {image: add.sum}
    """
    assert len(loads(write(tmp_path, nodes, "stats: stats.stats")).nodes) == 3


def test_a_port_declaring_an_unknown_kind_is_refused_where_it_is_declared() -> None:
    with pytest.raises(ValueError, match=r"port 'frame' declares unknown kind 'picture' \(kinds: image, jpeg"):
        Port("frame", "BGR frame", kind="picture")
