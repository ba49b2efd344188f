"""Read pipeline files and validate them completely before any video is accepted.

Every problem names the file, the node and what is wrong, and a folder with any bad
file refuses to load as a whole, so a server never starts with a pipeline that would
fail on its first video. A pipeline file looks like::

    id: player_tracking_v1          # must equal the file name without .yaml
    version: "1.0.0"
    description: People and their track ids.
    nodes:
      - id: detect
        plugin: ssdlite.detect_people      # plugin.tool
        params: {score_threshold: 0.4}
        inputs: {image: frame.image}       # frame.<image|image_bytes|index|timestamp>
      - id: track
        plugin: bytetrack.track
        inputs: {detections: detect.detections}
        on_error: fail                     # or skip: record the error in-band, go on
    outputs:
      players: track.tracks

Besides the rules above, a file is refused for: a key given twice in one mapping (YAML
would keep the last silently), a mapping key that is not a string, a parameter value
that is not plain JSON-like data (an unquoted date, `!!binary`), a value its tool's
`check_params` refuses (out of range, a model file that is not there), an input wired
to a source of another kind (`frame.index` into an image input: see `plugin.Port`), an
output wired to the frame rather than to a node, and a folder with no pipeline file at all.

This module checks the document and each node on its own (ids, version, plugin, parameters);
the strict reading of the YAML is `pipeline_yaml`'s, the checks of the wiring between nodes
and the order they make are `wiring`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videodag_service.dag.params import param_problems
from videodag_service.dag.pipeline_problems import Problems, shown
from videodag_service.dag.pipeline_yaml import UNREADABLE, read_pipeline_yaml
from videodag_service.dag.plugin import Tool
from videodag_service.dag.registry import PluginRegistry
from videodag_service.dag.resolved_params import resolve_params
from videodag_service.dag.spec import (
    FRAME_SOURCE,
    MAX_NODE_ID_LENGTH,
    MAX_PIPELINE_ID_LENGTH,
    NODE_ID_CHARS,
    NODE_ID_PATTERN,
    PIPELINE_FILE_ID_PATTERN,
    PIPELINE_ID_CHARS,
    ErrorPolicy,
    NodeSpec,
    PipelineSpec,
)
from videodag_service.dag.wiring import NodeGraph, topological_order, wired_inputs, wired_outputs

logger = logging.getLogger(__name__)

PIPELINE_FILE_SUFFIXES = (".yaml", ".yml")
_TOP_LEVEL_KEYS = {"id", "version", "description", "nodes", "outputs"}
_NODE_KEYS = {"id", "plugin", "params", "inputs", "on_error"}


class PipelineFileError(ValueError):
    """Raised when a pipeline file or folder is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid pipeline definitions:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_pipeline_file(path: Path, registry: PluginRegistry) -> PipelineSpec:
    """Load and validate one pipeline file; raises PipelineFileError listing every problem."""
    problems = Problems(path)
    spec = _parse(path, registry, problems)
    if problems.found or spec is None:
        raise PipelineFileError(problems.found or [f"{path}: not a pipeline"])
    return spec


def load_pipeline_folder(folder: Path, registry: PluginRegistry) -> dict[str, PipelineSpec]:
    """Load every pipeline file in `folder`; raises PipelineFileError if any file is invalid, or if
    there is none: a server serving no pipeline is a wrong folder, not a working service."""
    if not folder.is_dir():
        what = "is a file, not a folder of pipeline files" if folder.exists() else "pipeline folder does not exist"
        raise PipelineFileError([f"{folder}: {what}"])
    paths = pipeline_files(folder)
    for other in sorted(set(_visible_entries(folder)) - set(paths)):
        # A pipeline written as mine.json was silently not served: its callers got NOT_FOUND.
        logger.warning("pipeline folder %s: %s is not read: only its *.yaml and *.yml files are pipelines",
                       folder, other.name)
    if not paths:
        patterns = ", ".join(f"*{suffix}" for suffix in PIPELINE_FILE_SUFFIXES)
        raise PipelineFileError([f"no pipeline files ({patterns}) in {folder}"])
    pipelines: dict[str, PipelineSpec] = {}
    problems: list[str] = []
    for path in paths:
        try:
            spec = load_pipeline_file(path, registry)
        except PipelineFileError as error:
            problems.extend(error.problems)
            continue
        if spec.id in pipelines:
            problems.append(f"{path}: duplicate pipeline id {spec.id!r} (also in {pipelines[spec.id].source_path})")
            continue
        pipelines[spec.id] = spec
    if problems:
        raise PipelineFileError(problems)
    return pipelines


def pipeline_files(folder: Path) -> list[Path]:
    """The pipeline files in `folder`, by name: any case of .yaml or .yml. Hidden files are left
    out: editors leave lock files such as `.#name.yaml` (often dangling symlinks) beside the one edited."""
    return sorted(path for path in _visible_entries(folder) if path.suffix.lower() in PIPELINE_FILE_SUFFIXES)


def _visible_entries(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if not path.name.startswith(".")]


def _parse(path: Path, registry: PluginRegistry, problems: Problems) -> PipelineSpec | None:
    read = read_pipeline_yaml(path, problems)
    document = read.document
    if document is UNREADABLE:
        return None
    if not isinstance(document, dict):
        problems.add("must be a mapping with id, version, nodes and outputs")
        return None
    document = _string_keyed(document, "key", problems, None)
    for key in sorted(set(document) - _TOP_LEVEL_KEYS):
        problems.add(f"unknown key {key!r} (allowed: {', '.join(sorted(_TOP_LEVEL_KEYS))})")

    pipeline_id = _pipeline_id(document.get("id"), read.written_ids, path, problems)
    version = _version(document.get("version"), read.written_int_version, problems)
    description = document.get("description", "")
    if not isinstance(description, str):
        problems.add("'description' must be a string")

    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.add("'nodes' must be a non-empty list")
        return None
    graph = _nodes(raw_nodes, read.written_ids, registry, problems)
    outputs = wired_outputs(document.get("outputs"), graph, problems)
    ordered = topological_order(graph.nodes, problems)
    if problems.found or ordered is None:
        return None
    return PipelineSpec(
        id=pipeline_id,
        version=version,
        description=description.strip(),
        nodes=ordered,
        outputs=outputs,
        source_path=path,
    )


def _string_keyed(raw: Mapping[Any, Any], what: str, problems: Problems, node_id: str | None) -> dict[str, Any]:
    """The entries of `raw` with a string key; any other key (YAML reads `1:` as a number) is a problem."""
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, str):
            kept[key] = value
        else:
            problems.add(f"{what} {key!r} must be a string, got {type(key).__name__}", node_id)
    return kept


def _pipeline_id(value: Any, written_ids: Mapping[object, str | None], path: Path, problems: Problems) -> str:
    if value is None:
        problems.add(f"'id' is missing: give the file's name, as in id: {path.stem}")
        return ""
    problem = _id_problem(value, written_ids, PIPELINE_FILE_ID_PATTERN, PIPELINE_ID_CHARS, MAX_PIPELINE_ID_LENGTH,
                          "pipeline ids")
    if problem:
        problems.add(f"'id' {problem}")
        return ""
    if value != path.stem:
        lowercase = value == path.stem.lower()
        hint = f" (file names are lowercase like ids: {value}{path.suffix.lower()})" if lowercase else ""
        problems.add(f"'id' {shown(value)} must equal the file name {path.stem!r}{hint}")
    return str(value)


def _id_problem(value: Any, written_ids: Mapping[object, str | None], pattern: re.Pattern[str], chars: str,
                max_length: int, kind: str) -> str | None:
    """What is wrong with an id, the most telling first: its characters, its length, its first
    character. `written_ids`: the ids YAML read as numbers, as written (`0123` is 83 to YAML)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        written = written_ids.get(value) or shown(value)
        read_as = f"the number {shown(value)}" + (f" (YAML reads {written} so)" if written != shown(value) else "")
        return f"must be a string, got {read_as}: quote it, as in id: \"{written}\""
    if isinstance(value, bool):
        return (f"must be a string, got {shown(value)}: unquoted, YAML reads on, off, yes, no, true and false "
                "as true or false; quote it, as in id: \"on\"")
    if not isinstance(value, str) or re.fullmatch(f"[{chars}]+", value) is None:
        return f"must match [{chars}]+, got {shown(value)}"
    if len(value) > max_length:
        return f"has {len(value)} characters ({value[:40]!r}…); {kind} have at most {max_length}"
    if pattern.match(value) is None:
        return f"must start with a letter or digit, got {shown(value)}"
    return None


def _version(value: Any, written_int: str | None, problems: Problems) -> str:
    """The version as served: a string as written, or an int written in plain digits. A float
    is refused, since YAML has already lost what was written: `1.10` reads as 1.1, and `.nan`
    is no version at all; so is an int YAML 1.1 reads otherwise (`010` as 8, `1:20` as 80)."""
    if isinstance(value, str) and value.strip():
        if value != value.strip() or not value.isprintable():
            problems.add(f"'version' must be printable text with no space around it, got {shown(value)}")
            return ""
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            problems.add(f"'version' must be a string such as \"1.0.0\" or an int in plain digits, got {value}")
            return ""
        plain = _decimal(value)
        if written_int is not None and written_int != plain:
            written = written_int if len(written_int) <= 80 else written_int[:77] + "..."
            problems.add(f"'version' {written} reads as the number {shown(value)} in YAML: quote it, as in "
                         f"version: \"{written}\"")
            return ""
        if plain is None:
            problems.add(f"'version' has more digits than a version needs: {shown(value)}")
            return ""
        return plain
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.add("'version' is required and must be a string such as \"1.0.0\"")
    elif isinstance(value, float):
        problems.add(
            f"'version' must be a string or an int, got the number {shown(value)}: quote it, as in "
            "version: \"1.10\" (unquoted, YAML reads 1.10 as the number 1.1)"
        )
    else:
        problems.add(f"'version' must be a string such as \"1.0.0\" or an int, got {type(value).__name__} "
                     f"{shown(value)}")
    return ""


def _decimal(number: int) -> str | None:
    """`number` in decimal digits; None for one of more digits than Python writes out."""
    try:
        return str(number)
    except ValueError:
        return None


def _nodes(raw_nodes: list[Any], written_ids: Mapping[object, str | None], registry: PluginRegistry,
           problems: Problems) -> NodeGraph:
    graph = NodeGraph()
    raw_inputs: dict[str, Mapping[str, Any]] = {}
    for position, raw in enumerate(raw_nodes):
        parsed = _node(position, raw, written_ids, registry, problems, graph)
        if parsed is not None:
            spec, inputs = parsed
            graph.nodes[spec.id] = spec
            raw_inputs[spec.id] = inputs
    # Inputs are checked once every node is known, so wiring may point forward in the file.
    for node_id, spec in list(graph.nodes.items()):
        wired = wired_inputs(spec.tool, raw_inputs[node_id], graph, problems, node_id)
        graph.nodes[node_id] = dataclasses.replace(spec, inputs=wired)
    return graph


def _node(
    position: int, raw: Any, written_ids: Mapping[object, str | None], registry: PluginRegistry, problems: Problems,
    graph: NodeGraph,
) -> tuple[NodeSpec, Mapping[str, Any]] | None:
    """One node without its wiring, and its raw inputs; None when it has a problem wiring cannot pass over.

    Its id joins `graph.declared` whenever it is a string, so nodes wired to it are not told it is missing.
    """
    if not isinstance(raw, dict):
        problems.add(f"nodes[{position}] must be a mapping")
        return None
    node_id = _node_id(position, raw.get("id"), written_ids, problems, graph)
    if node_id is None:
        return None
    raw = _string_keyed(raw, "key", problems, node_id)
    for key in sorted(set(raw) - _NODE_KEYS):
        problems.add(f"unknown key {key!r} (allowed: {', '.join(sorted(_NODE_KEYS))})", node_id)
    tool = _tool(raw.get("plugin"), registry, problems, node_id)
    policy = _policy(raw.get("on_error", "fail"), problems, node_id)
    given_params = _named_mapping(raw.get("params"), "'params' must be a mapping of parameter name to value",
                                  "parameter name", problems, node_id)
    inputs = _named_mapping(raw.get("inputs"), "'inputs' must be a mapping of input name to source",
                            "input name", problems, node_id)
    if tool is None or policy is None:
        return None
    spec = NodeSpec(
        id=node_id,
        plugin_ref=str(raw["plugin"]),
        tool=tool,
        params=_params(tool, given_params, problems, node_id),
        given_params=given_params,
        inputs=(),
        on_error=policy,
    )
    return spec, inputs


def _node_id(position: int, value: Any, written_ids: Mapping[object, str | None], problems: Problems,
             graph: NodeGraph) -> str | None:
    """The node's id, declared in `graph`; None, with the problem noted, when it cannot be one."""
    if value is None:
        problems.add(f"nodes[{position}]: 'id' is missing: every node needs one, such as id: detect")
        return None
    problem = _id_problem(value, written_ids, NODE_ID_PATTERN, NODE_ID_CHARS, MAX_NODE_ID_LENGTH, "node ids")
    if problem:
        problems.add(f"nodes[{position}]: 'id' {problem}")
        if isinstance(value, str):
            graph.declared.add(value)
        elif isinstance(value, int) and not isinstance(value, bool) and (written := written_ids.get(value)):
            graph.declared.add(written)  # wired to as written: `010.boxes`
        return None
    node_id = str(value)
    if node_id == FRAME_SOURCE:
        problems.add(f"'{FRAME_SOURCE}' is reserved for the frame's own fields", node_id)
        return None
    if node_id in graph.declared:
        problems.add("duplicate node id", node_id)
        return None
    graph.declared.add(node_id)
    return node_id


def _named_mapping(value: Any, must: str, key_what: str, problems: Problems, node_id: str) -> dict[str, Any]:
    """A node's `params` or `inputs`: absent or null is empty; anything but a mapping (even `[]`) is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(f"{must}, got {type(value).__name__} {shown(value)}", node_id)
        return {}
    return _string_keyed(value, key_what, problems, node_id)


def _tool(reference: Any, registry: PluginRegistry, problems: Problems, node_id: str) -> Tool | None:
    if not isinstance(reference, str) or reference.count(".") != 1:
        problems.add(f"'plugin' must be 'plugin.tool', got {shown(reference)}", node_id)
        return None
    plugin_name, tool_name = reference.split(".")
    plugin = registry.plugin(plugin_name)
    if plugin is None:
        problems.add(
            f"unknown plugin {shown(plugin_name)} (known plugins: {', '.join(registry.plugin_names())})", node_id
        )
        return None
    tool = plugin.tool(tool_name)
    if tool is None:
        known = ", ".join(t.name for t in plugin.tools)
        problems.add(f"plugin {shown(plugin_name)} has no tool {shown(tool_name)} (its tools: {known})", node_id)
    return tool


def _policy(value: Any, problems: Problems, node_id: str) -> ErrorPolicy | None:
    allowed = [policy.value for policy in ErrorPolicy]
    if isinstance(value, str) and value in allowed:  # the Enum's own refusal would print any value in full
        return ErrorPolicy(value)
    problems.add(f"'on_error' must be one of {', '.join(allowed)}, got {shown(value)}", node_id)
    return None


def _params(tool: Tool, given: Mapping[str, Any], problems: Problems, node_id: str) -> dict[str, Any]:
    """Every declared parameter, given or default. The tool's own check runs once every value has its
    type, even when some are out of range, so that the node's problems all show at once."""
    resolved = resolve_params(tool, given)
    for problem in resolved.problems:
        problems.add(problem, node_id)
    if resolved.checkable:
        _check_params(tool, resolved.values, problems, node_id)
    return resolved.values


def _check_params(tool: Tool, params: Mapping[str, Any], problems: Problems, node_id: str) -> None:
    """The tool's own check of its values (relations, files), so a bad one stops the server, not each run."""
    if tool.check_params is None:
        return
    try:
        tool.check_params(params)
    except ValueError as error:
        for problem in param_problems(error):
            problems.add(problem, node_id)
    except Exception as error:  # a faulty check must still leave a message naming the file and node
        problems.add(f"checking the parameters of {tool.name} failed: {type(error).__name__}: {error}", node_id)


