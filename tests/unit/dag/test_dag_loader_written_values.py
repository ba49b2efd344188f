"""The loader tells a file's author about values as they wrote them, and within reason.

YAML hides some of what was written (`0123` is the number 83, `1e-3` is text to YAML 1.1) and
aliases let a few hundred bytes stand for a billion values: a problem must neither show the
number YAML made instead of what was written, nor print every value an alias stands for.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from videodag_service.dag import default_registry, load_pipeline_file
from videodag_service.dag.loader import PipelineFileError
from videodag_service.dag.pipeline_problems import shown

# Six levels of ten: a million leaves in a few hundred bytes, whose repr alone is 7 MB. Three
# more levels are a billion, which the load took minutes and gigabytes to print.
ALIAS_BOMB = ("[&l0 [a, a, a, a, a, a, a, a, a, a], "
              + ", ".join(f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]" for level in range(1, 6))
              + "]")

STATS_PIPELINE = """
id: {id}
version: {version}
nodes:
  - id: {node_id}
    plugin: {plugin}
    on_error: {on_error}
    params: {params}
    inputs: {{image: {image}}}
outputs:
  out: {output}
"""


def pipeline(**given: str) -> str:
    values = {"id": "checked", "version": '"1"', "node_id": "n", "plugin": "stats.frame_stats",
              "on_error": "fail", "params": "{}", "image": "frame.image", "output": "n.stats", **given}
    return STATS_PIPELINE.format(**values)


def problems_in(folder: Path, text: str, name: str = "checked") -> list[str]:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(path, default_registry())
    assert all(str(path) in problem for problem in caught.value.problems), caught.value.problems
    return caught.value.problems


def test_a_value_is_shown_cut_short() -> None:
    assert shown("abc") == "'abc'" and shown(1.5) == "1.5" and shown({"a": [1]}) == "{'a': [1]}"
    assert len(shown("x" * 10**6)) < 100
    assert len(shown(10**300)) < 50
    assert shown(list(range(100))) == "[0, 1, 2, 3, 4, ...]"


@pytest.mark.parametrize("where", [
    {"version": ALIAS_BOMB},
    {"plugin": ALIAS_BOMB},
    {"on_error": ALIAS_BOMB},
    {"node_id": ALIAS_BOMB},
    {"params": ALIAS_BOMB},
    {"params": "{include_channels: " + ALIAS_BOMB + "}"},
    {"image": ALIAS_BOMB},
    {"output": ALIAS_BOMB},
])
def test_a_value_made_of_aliases_is_refused_showing_a_few_of_its_values(tmp_path: Path, where: dict[str, str]) -> None:
    problems = problems_in(tmp_path, pipeline(**where))  # a node without its id also leaves its output unwired
    assert any("[['a', 'a', 'a', 'a', 'a', ...], [[...], [...], [...], [...], [...], ...]" in problem
               for problem in problems), problems
    assert all(len(problem) < 400 + len(str(tmp_path)) for problem in problems), problems


def test_a_long_text_where_a_number_goes_is_shown_cut_short(tmp_path: Path) -> None:
    (problem,) = problems_in(tmp_path, pipeline(plugin="hog.detect_people", output="n.detections",
                                                params="{upscale: " + "x" * 100_000 + "}"))
    assert "parameter 'upscale' must be float, got str 'xxxx" in problem and len(problem) < 400 + len(str(tmp_path))


@pytest.mark.parametrize(("written", "value"), [("5e-1", 0.5), ("1E-1", 0.1), ("2.5e-1", 0.25), ("+1e0", 1.0)])
def test_a_number_with_an_exponent_is_a_number_as_json_reads_it(tmp_path: Path, written: str, value: float) -> None:
    path = tmp_path / "checked.yaml"
    path.write_text(pipeline(plugin="hog.detect_people", output="n.detections",
                             params=f"{{score_threshold: {written}}}"))
    (node,) = load_pipeline_file(path, default_registry()).nodes
    assert node.params["score_threshold"] == value


def test_a_number_with_an_exponent_is_no_int(tmp_path: Path) -> None:
    (problem,) = problems_in(tmp_path, pipeline(plugin="hog.detect_people", output="n.detections",
                                                params="{win_stride: 8e0}"))
    assert problem.endswith("node 'n': parameter 'win_stride' must be int, got str '8e0'"), problem


def test_ids_versions_and_names_written_like_numbers_with_an_exponent_stay_text(tmp_path: Path) -> None:
    """Only a float parameter reads them as numbers: these files loaded before, and still do."""
    path = tmp_path / "1e5.yaml"
    path.write_text(pipeline(id="1e5", version="20e1", node_id="2e5", output="2e5.stats")
                    .replace("  out: 2e5.stats", "  1e3: 2e5.stats") + "description: 1e3\n")
    spec = load_pipeline_file(path, default_registry())
    assert (spec.id, spec.version, spec.description, [node.id for node in spec.nodes]) == ("1e5", "20e1", "1e3",
                                                                                            ["2e5"])
    assert [name for name, *_ in spec.outputs] == ["1e3"]


def test_a_non_finite_number_with_an_exponent_is_refused_as_such(tmp_path: Path) -> None:
    (problem,) = problems_in(tmp_path, pipeline(plugin="hog.detect_people", output="n.detections",
                                                params="{score_threshold: 1e999}"))
    assert "parameter 'score_threshold'" in problem and "inf" in problem, problem


def test_a_pipeline_id_yaml_reads_as_a_number_is_to_be_quoted_as_written(tmp_path: Path) -> None:
    (problem,) = problems_in(tmp_path, pipeline(id="0123"), name="0123")
    assert problem.endswith("'id' must be a string, got the number 83 (YAML reads 0123 so): quote it, as in "
                            "id: \"0123\""), problem
    (problem,) = problems_in(tmp_path, pipeline(id="123"), name="123")
    assert problem.endswith("'id' must be a string, got the number 123: quote it, as in id: \"123\""), problem


def test_a_node_id_yaml_reads_as_a_number_is_one_problem_not_also_a_missing_node(tmp_path: Path) -> None:
    assert problems_in(tmp_path, pipeline(node_id="010", output="010.stats")) == [
        f"{tmp_path / 'checked.yaml'}: nodes[0]: 'id' must be a string, got the number 8 (YAML reads 010 so): "
        "quote it, as in id: \"010\""
    ]


@pytest.mark.parametrize(("text", "line"), [
    ("id: checked\nversion: \"1\"\nnodes:\n\t- id: n\n", 4),
    ('{\n\t"id": "checked"\n}\n', 2),  # JSON indented with tabs, as many editors save it
])
def test_a_file_indented_with_tabs_is_told_so_in_one_line_naming_it(tmp_path: Path, text: str, line: int) -> None:
    (problem,) = problems_in(tmp_path, text)
    assert "\n" not in problem and "<unicode string>" not in problem
    assert f": cannot read YAML: line {line}, column 1: found character '\\t' that cannot start any token" in problem
    assert problem.endswith("; indent with spaces: YAML takes no tabs there"), problem


def test_a_syntax_error_is_told_in_one_line_with_its_place(tmp_path: Path) -> None:
    (problem,) = problems_in(tmp_path, 'id: checked\nversion: "1\nnodes: []\n')
    assert problem == (f"{tmp_path / 'checked.yaml'}: cannot read YAML: line 4, column 1: found unexpected end of "
                       "stream (while scanning a quoted scalar)"), problem



@pytest.mark.parametrize("version", ["-5", "-0x5"])
def test_a_negative_int_version_is_refused_as_no_plain_digits(tmp_path: Path, version: str) -> None:
    (problem,) = problems_in(tmp_path, pipeline(version=version))
    assert problem.endswith("'version' must be a string such as \"1.0.0\" or an int in plain digits, got -5"), problem


def test_a_negative_version_quoted_is_text_and_served_as_written(tmp_path: Path) -> None:
    path = tmp_path / "checked.yaml"
    path.write_text(pipeline(version='"-5"'))
    assert load_pipeline_file(path, default_registry()).version == "-5"


def test_two_node_ids_yaml_reads_as_one_number_are_each_told_the_number(tmp_path: Path) -> None:
    text = pipeline(node_id="0123", output="n.stats").replace(
        "outputs:", "  - {id: 83, plugin: stats.frame_stats, inputs: {image: frame.image}}\noutputs:")
    problems = problems_in(tmp_path, text)
    said = [problem for problem in problems if "'id' must be a string" in problem]
    assert len(said) == 2 and all(problem.endswith('got the number 83: quote it, as in id: "83"') for problem in said)


@pytest.mark.parametrize("where", ["on_error", "node_id", "version", "plugin"])
def test_an_integer_of_more_digits_than_python_writes_is_a_problem_not_a_crash(
    tmp_path: Path, where: str
) -> None:
    """YAML reads 0x and 4000 hexadecimal digits as an integer whose decimal digits Python will not write."""
    problems = problems_in(tmp_path, pipeline(**{where: "0x" + "f" * 4000}))
    assert any("an integer of 16000 bits" in problem for problem in problems), problems


def test_a_long_name_of_a_plugin_a_tool_or_a_source_is_shown_cut_short(tmp_path: Path) -> None:
    long = "x" * 100_000
    for given in ({"plugin": f"{long}.frame_stats"}, {"plugin": f"stats.{long}"}, {"image": f"frame.{long}"},
                  {"image": f"{long}.out"}):
        problems = problems_in(tmp_path, pipeline(**given))
        assert all(len(problem) < 1000 + len(str(tmp_path)) for problem in problems), given
