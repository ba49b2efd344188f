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
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videodag_service.dag.plugin import PARAM_TYPES, Param, Tool
from videodag_service.dag.registry import PluginRegistry
from videodag_service.dag.spec import (
    FRAME_FIELDS,
    FRAME_SOURCE,
    NODE_ID_PATTERN,
    PIPELINE_ID_PATTERN,
    RESERVED_OUTPUT_NAMES,
    ErrorPolicy,
    NodeSpec,
    PipelineSpec,
    SourceRef,
)

PIPELINE_FILE_SUFFIXES = (".yaml", ".yml")
_TOP_LEVEL_KEYS = {"id", "version", "description", "nodes", "outputs"}
_NODE_KEYS = {"id", "plugin", "params", "inputs", "on_error"}


class PipelineFileError(ValueError):
    """Raised when a pipeline file or folder is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid pipeline definitions:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass
class _Problems:
    """Collects problems for one file, each prefixed with the file and, when known, the node."""

    path: Path
    found: list[str] = field(default_factory=list)

    def add(self, problem: str, node: str | None = None) -> None:
        where = f"{self.path}: node {node!r}: " if node else f"{self.path}: "
        self.found.append(where + problem)


def load_pipeline_file(path: Path, registry: PluginRegistry) -> PipelineSpec:
    """Load and validate one pipeline file; raises PipelineFileError listing every problem."""
    problems = _Problems(path)
    spec = _parse(path, registry, problems)
    if problems.found or spec is None:
        raise PipelineFileError(problems.found or [f"{path}: not a pipeline"])
    return spec


def load_pipeline_folder(folder: Path, registry: PluginRegistry) -> dict[str, PipelineSpec]:
    """Load every pipeline file in `folder`; raises PipelineFileError if any file is invalid."""
    if not folder.is_dir():
        raise PipelineFileError([f"{folder}: pipeline folder does not exist"])
    pipelines: dict[str, PipelineSpec] = {}
    problems: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in PIPELINE_FILE_SUFFIXES):
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


def _parse(path: Path, registry: PluginRegistry, problems: _Problems) -> PipelineSpec | None:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problems.add(f"cannot read YAML: {error}")
        return None
    if not isinstance(document, dict):
        problems.add("must be a mapping with id, version, nodes and outputs")
        return None
    for key in sorted(set(document) - _TOP_LEVEL_KEYS):
        problems.add(f"unknown key {key!r} (allowed: {', '.join(sorted(_TOP_LEVEL_KEYS))})")

    pipeline_id = _pipeline_id(document.get("id"), path, problems)
    version = document.get("version")
    if not isinstance(version, str | int | float) or isinstance(version, bool) or str(version) == "":
        problems.add("'version' is required and must be a string such as \"1.0.0\"")
    description = document.get("description", "")
    if not isinstance(description, str):
        problems.add("'description' must be a string")

    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.add("'nodes' must be a non-empty list")
        return None
    nodes = _nodes(raw_nodes, registry, problems)
    outputs = _outputs(document.get("outputs"), nodes, problems)
    ordered = _topological_order(nodes, problems)
    if problems.found or ordered is None:
        return None
    return PipelineSpec(
        id=pipeline_id,
        version=str(version),
        description=description.strip(),
        nodes=ordered,
        outputs=outputs,
        source_path=path,
    )


def _pipeline_id(value: Any, path: Path, problems: _Problems) -> str:
    if not isinstance(value, str) or not PIPELINE_ID_PATTERN.match(value):
        problems.add(f"'id' must match [a-z0-9_.-]+, got {value!r}")
        return ""
    if value != path.stem:
        problems.add(f"'id' {value!r} must equal the file name {path.stem!r}")
    return value


def _nodes(raw_nodes: list[Any], registry: PluginRegistry, problems: _Problems) -> dict[str, NodeSpec]:
    nodes: dict[str, NodeSpec] = {}
    raw_inputs: dict[str, Mapping[str, Any]] = {}
    for position, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            problems.add(f"nodes[{position}] must be a mapping")
            continue
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not NODE_ID_PATTERN.match(node_id):
            problems.add(f"nodes[{position}]: 'id' must match [A-Za-z0-9_-]+, got {node_id!r}")
            continue
        if node_id == FRAME_SOURCE:
            problems.add(f"'{FRAME_SOURCE}' is reserved for the frame's own fields", node_id)
            continue
        if node_id in nodes or node_id in raw_inputs:
            problems.add("duplicate node id", node_id)
            continue
        for key in sorted(set(raw) - _NODE_KEYS):
            problems.add(f"unknown key {key!r} (allowed: {', '.join(sorted(_NODE_KEYS))})", node_id)
        tool = _tool(raw.get("plugin"), registry, problems, node_id)
        policy = _policy(raw.get("on_error", "fail"), problems, node_id)
        given_params = raw.get("params") or {}
        inputs = raw.get("inputs") or {}
        if not isinstance(given_params, dict):
            problems.add("'params' must be a mapping", node_id)
            given_params = {}
        if not isinstance(inputs, dict):
            problems.add("'inputs' must be a mapping of input name to source", node_id)
            inputs = {}
        raw_inputs[node_id] = inputs
        if tool is None or policy is None:
            continue
        params = _params(tool, given_params, problems, node_id)
        nodes[node_id] = NodeSpec(
            id=node_id,
            plugin_ref=str(raw["plugin"]),
            tool=tool,
            params=params,
            given_params=dict(given_params),
            inputs=(),
            on_error=policy,
        )
    # Inputs are checked once every node is known, so wiring may point forward in the file.
    for node_id, spec in list(nodes.items()):
        wired = _inputs(spec.tool, raw_inputs[node_id], nodes, problems, node_id)
        nodes[node_id] = NodeSpec(**{**spec.__dict__, "inputs": wired})
    return nodes


def _tool(reference: Any, registry: PluginRegistry, problems: _Problems, node_id: str) -> Tool | None:
    if not isinstance(reference, str) or reference.count(".") != 1:
        problems.add(f"'plugin' must be 'plugin.tool', got {reference!r}", node_id)
        return None
    plugin_name, tool_name = reference.split(".")
    plugin = registry.plugin(plugin_name)
    if plugin is None:
        problems.add(
            f"unknown plugin {plugin_name!r} (known plugins: {', '.join(registry.plugin_names())})", node_id
        )
        return None
    tool = plugin.tool(tool_name)
    if tool is None:
        known = ", ".join(t.name for t in plugin.tools)
        problems.add(f"plugin {plugin_name!r} has no tool {tool_name!r} (its tools: {known})", node_id)
    return tool


def _policy(value: Any, problems: _Problems, node_id: str) -> ErrorPolicy | None:
    try:
        return ErrorPolicy(value)
    except ValueError:
        allowed = ", ".join(p.value for p in ErrorPolicy)
        problems.add(f"'on_error' must be one of {allowed}, got {value!r}", node_id)
        return None


def _params(tool: Tool, given: Mapping[str, Any], problems: _Problems, node_id: str) -> dict[str, Any]:
    declared = {p.name: p for p in tool.params}
    for name in sorted(set(given) - set(declared)):
        accepted = ", ".join(declared) or "none"
        problems.add(f"unknown parameter {name!r} for {tool.name} (accepted: {accepted})", node_id)
    resolved: dict[str, Any] = {}
    for param in tool.params:
        if param.name not in given:
            if param.required:
                problems.add(f"missing required parameter {param.name!r}", node_id)
            else:
                resolved[param.name] = param.default
            continue
        problem = _param_problem(param, given[param.name])
        if problem:
            problems.add(problem, node_id)
            continue
        value = given[param.name]
        resolved[param.name] = float(value) if param.kind is float else value
    return resolved


def _param_problem(param: Param, value: Any) -> str | None:
    if param.kind not in PARAM_TYPES:
        return f"parameter {param.name!r} declares unsupported type {param.kind.__name__}"
    # bool is an int in Python; a YAML `true` must not pass as a number, nor 1 as a bool.
    is_bool = isinstance(value, bool)
    fits = (
        (param.kind is bool and is_bool)
        or (param.kind is int and isinstance(value, int) and not is_bool)
        or (param.kind is float and isinstance(value, int | float) and not is_bool)
        or (param.kind in (str, list, dict) and isinstance(value, param.kind))
    )
    if not fits:
        return f"parameter {param.name!r} must be {param.kind.__name__}, got {type(value).__name__} {value!r}"
    if param.choices and value not in param.choices:
        return f"parameter {param.name!r} must be one of {list(param.choices)}, got {value!r}"
    return None


def _inputs(
    tool: Tool, given: Mapping[str, Any], nodes: Mapping[str, NodeSpec], problems: _Problems, node_id: str
) -> tuple[tuple[str, SourceRef], ...]:
    declared = [port.name for port in tool.inputs]
    for name in sorted(set(given) - set(declared)):
        problems.add(f"unknown input {name!r} for {tool.name} (its inputs: {', '.join(declared) or 'none'})", node_id)
    wired: list[tuple[str, SourceRef]] = []
    for name in declared:
        if name not in given:
            problems.add(f"input {name!r} is not wired (give it a source such as frame.image)", node_id)
            continue
        source = _source(given[name], nodes, problems, node_id, f"input {name!r}")
        if source is not None:
            wired.append((name, source))
    return tuple(wired)


def _source(
    value: Any, nodes: Mapping[str, NodeSpec], problems: _Problems, node_id: str | None, what: str
) -> SourceRef | None:
    if not isinstance(value, str) or value.count(".") != 1:
        problems.add(f"{what} must be 'frame.<field>' or '<node>.<output>', got {value!r}", node_id)
        return None
    source_node, output = value.split(".")
    if source_node == FRAME_SOURCE:
        if output not in FRAME_FIELDS:
            problems.add(f"{what}: the frame has no field {output!r} (fields: {', '.join(FRAME_FIELDS)})", node_id)
            return None
        return SourceRef(source_node, output)
    upstream = nodes.get(source_node)
    if upstream is None:
        problems.add(f"{what} is wired to missing node {source_node!r}", node_id)
        return None
    outputs = [port.name for port in upstream.tool.outputs]
    if output not in outputs:
        problems.add(
            f"{what} is wired to missing output {output!r} of node {source_node!r} "
            f"(its outputs: {', '.join(outputs)})",
            node_id,
        )
        return None
    return SourceRef(source_node, output)


def _outputs(raw: Any, nodes: Mapping[str, NodeSpec], problems: _Problems) -> tuple[tuple[str, SourceRef], ...]:
    if not isinstance(raw, dict) or not raw:
        problems.add("'outputs' must be a non-empty mapping of result name to '<node>.<output>'")
        return ()
    outputs: list[tuple[str, SourceRef]] = []
    for name, value in raw.items():
        if not isinstance(name, str) or name in RESERVED_OUTPUT_NAMES:
            problems.add(f"output name {name!r} is not allowed (reserved: {', '.join(sorted(RESERVED_OUTPUT_NAMES))})")
            continue
        source = _source(value, nodes, problems, None, f"output {name!r}")
        if source is not None:
            outputs.append((name, source))
    return tuple(outputs)


def _topological_order(nodes: Mapping[str, NodeSpec], problems: _Problems) -> tuple[NodeSpec, ...] | None:
    graph = {
        node_id: {source.node for _, source in spec.inputs if not source.is_frame}
        for node_id, spec in nodes.items()
    }
    sorter = graphlib.TopologicalSorter(graph)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]
        problems.add(f"cycle between nodes: {' -> '.join(cycle)}", cycle[0])
        return None
    return tuple(nodes[node_id] for node_id in order)
