"""The wiring of a pipeline file: each node's inputs, the pipeline's outputs and the order they make.

An input may name a frame field or an output of any node in the file (wiring may point
forward); an output names a node's. Each is checked against what it is wired to (it exists,
its kind fits) and the nodes are put in an order where each comes after what feeds it, a cycle
being a problem. Apart from the loader's checks of the document and of each node on its own:
the wiring is checked once every node is known.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videodag_service.dag.pipeline_problems import Problems, shown
from videodag_service.dag.plugin import Tool
from videodag_service.dag.ports import Port, describe_kind, kinds_compatible
from videodag_service.dag.spec import (
    FRAME_FIELD_KINDS,
    FRAME_FIELDS,
    FRAME_SOURCE,
    RESERVED_OUTPUT_NAMES,
    NodeSpec,
    SourceRef,
)

# Kinds of values a result cannot carry: results are JSON-like.
_NOT_RESULT_KINDS = frozenset({"image", "jpeg"})


@dataclass
class NodeGraph:
    """The file's nodes that passed their own checks, and the ids of every node the file declares:
    wiring to a declared node with problems of its own is not reported again as wiring to a missing one."""

    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)


def wired_inputs(
    tool: Tool, given: Mapping[str, Any], graph: NodeGraph, problems: Problems, node_id: str
) -> tuple[tuple[str, SourceRef], ...]:
    """The node's inputs with their sources, in the tool's order; one unknown, unwired or wired to
    what does not fit is a problem, and left out."""
    declared = [port.name for port in tool.inputs]
    for name in sorted(set(given) - set(declared)):
        problems.add(f"unknown input {name!r} for {tool.name} (its inputs: {', '.join(declared) or 'none'})", node_id)
    wired: list[tuple[str, SourceRef]] = []
    for port in tool.inputs:
        if port.name not in given:
            problems.add(f"input {port.name!r} is not wired (give it a source such as frame.image)", node_id)
            continue
        source = _source(given[port.name], graph, problems, node_id, f"input {port.name!r}")
        if source is None:
            continue
        mismatch = _kind_mismatch(port, source, _source_kind(source, graph))
        if mismatch:
            problems.add(mismatch, node_id)
            continue
        wired.append((port.name, source))
    return tuple(wired)


def _kind_mismatch(port: Port, source: SourceRef, given: str | None) -> str | None:
    """Why `source` cannot feed `port`, naming both kinds; None when they fit or either declares no kind."""
    if given is None or port.kind is None or kinds_compatible(given, port.kind):
        return None
    return f"input {port.name!r} takes {describe_kind(port.kind)}, but {source} gives {describe_kind(given)}"


def _source_kind(source: SourceRef, graph: NodeGraph) -> str | None:
    """The kind of value a source that `_source` accepted carries; None when its port declares none."""
    if source.is_frame:
        return FRAME_FIELD_KINDS[source.output]
    upstream = graph.nodes[source.node].tool
    return next(port.kind for port in upstream.outputs if port.name == source.output)


def _source(value: Any, graph: NodeGraph, problems: Problems, node_id: str | None, what: str) -> SourceRef | None:
    """The source `value` names; an input (`node_id` given) may name a frame field, an output only a node's."""
    if not isinstance(value, str) or value.count(".") != 1:
        forms = "'frame.<field>' or '<node>.<output>'" if node_id is not None else "'<node>.<output>'"
        problems.add(f"{what} must be {forms}, got {shown(value)}", node_id)
        return None
    source_node, output = value.split(".")
    if source_node == FRAME_SOURCE:
        if output not in FRAME_FIELDS:
            problems.add(f"{what}: the frame has no field {shown(output)} (fields: {', '.join(FRAME_FIELDS)})", node_id)
            return None
        return SourceRef(source_node, output)
    upstream = graph.nodes.get(source_node)
    if upstream is None:
        # A node the file declares but refused already has its own problem; this wiring adds nothing.
        if source_node not in graph.declared:
            problems.add(f"{what} is wired to missing node {shown(source_node)}", node_id)
        return None
    outputs = [port.name for port in upstream.tool.outputs]
    if output not in outputs:
        problems.add(
            f"{what} is wired to missing output {shown(output)} of node {shown(source_node)} "
            f"(its outputs: {', '.join(outputs)})",
            node_id,
        )
        return None
    return SourceRef(source_node, output)


def wired_outputs(raw: Any, graph: NodeGraph, problems: Problems) -> tuple[tuple[str, SourceRef], ...]:
    """The pipeline's outputs, by result name: each from a node's output a result can carry."""
    if not isinstance(raw, dict) or not raw:
        problems.add("'outputs' must be a non-empty mapping of result name to '<node>.<output>'")
        return ()
    outputs: list[tuple[str, SourceRef]] = []
    for name, value in raw.items():
        problem = _output_name_problem(name)
        if problem:
            problems.add(problem)
            continue
        if isinstance(value, str) and value.startswith(f"{FRAME_SOURCE}."):
            # The executor builds results from node values only: a frame field would be advertised, never sent.
            problems.add(
                f"output {name!r} must come from a node ('<node>.<output>'), not {shown(value)}: "
                "frame_index and timestamp are in every frame's result already"
            )
            continue
        source = _source(value, graph, problems, None, f"output {name!r}")
        if source is None:
            continue
        kind = _source_kind(source, graph)
        if kind in _NOT_RESULT_KINDS:
            # Results are JSON-like: bytes cannot go out, an image would be a list of millions of numbers.
            problems.add(f"output {name!r} cannot be {source}, which gives {describe_kind(kind)}: results are "
                         "JSON-like values, so wire it to a node that turns the image into findings")
            continue
        outputs.append((name, source))
    return tuple(outputs)


def _output_name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"output name {name!r} must be a string, got {type(name).__name__}"
    if not name:
        return "output name must not be empty"
    if name in RESERVED_OUTPUT_NAMES:
        return f"output name {name!r} is not allowed (reserved: {', '.join(sorted(RESERVED_OUTPUT_NAMES))})"
    return None


def topological_order(nodes: Mapping[str, NodeSpec], problems: Problems) -> tuple[NodeSpec, ...] | None:
    """The nodes, each after those it reads from; None, with the problem noted, for a cycle."""
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
