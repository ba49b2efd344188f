"""Build the OpenCV text graph (.pbtxt) that lets cv2.dnn run the SSDLite frozen graph.

OpenCV cannot import the whole TF Object Detection API graph: its preprocessor and
postprocessor are `while` loops over TensorArrays, and the anchors come from dynamic
shape ops. It can run the network in between. So the text graph keeps only what the
box predictors' outputs depend on and everything else is done in numpy:

- the input becomes a float placeholder `image` (NCHW blob, already resized to 300x300
  and scaled to [-1, 1], i.e. what `Preprocessor/sub` would produce);
- the outputs are the `BoxPredictor_<i>/{BoxEncodingPredictor,ClassPredictor}/BiasAdd`
  convolutions (`anchors.py` and `boxes.py` do what `MultipleGridAnchorGenerator` and
  `Postprocessor` did);
- `Identity` nodes are bypassed and control inputs dropped;
- `Const` nodes are left out: OpenCV reads weights from the binary graph by name, and a
  Const that also carried a `value` in the text graph would be registered twice and the
  import would fail.

The starting point is `cv2.dnn.writeTextGraph`, which dumps the binary graph as protobuf
text without tensor contents; this module parses that dump, prunes it and writes it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INPUT_NAME = "image"
# The tensor the model's own preprocessor hands to the feature extractor.
PREPROCESSED_TENSOR = "Preprocessor/sub"
_HEAD_PATTERN = re.compile(r"^BoxPredictor_(\d+)/(BoxEncodingPredictor|ClassPredictor)/BiasAdd$")
_FIELD_PATTERN = re.compile(r'^  (name|op|input): "(.*)"$')


class TextGraphError(ValueError):
    """Raised when a graph does not have the structure this module expects."""


@dataclass
class GraphNode:
    """One `node { ... }` block: name, op, inputs, and its `attr` blocks kept as raw text."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr_blocks: list[list[str]] = field(default_factory=list)

    def to_text(self) -> list[str]:
        lines = ["node {", f'  name: "{self.name}"', f'  op: "{self.op}"']
        lines += [f'  input: "{name}"' for name in self.inputs]
        for block in self.attr_blocks:
            lines += block
        lines.append("}")
        return lines


def parse_text_graph(text: str) -> list[GraphNode]:
    """The nodes of a GraphDef in protobuf text form, as `writeTextGraph` prints it.

    Relies on that printer's layout: one field per line, two spaces per nesting level.
    """
    nodes: list[GraphNode] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line != "node {":
            index = _skip_block(lines, index) if line.endswith("{") else index + 1
            continue
        node, index = _parse_node(lines, index + 1)
        nodes.append(node)
    if not nodes:
        raise TextGraphError("the text graph has no nodes")
    return nodes


def _skip_block(lines: Sequence[str], index: int) -> int:
    """Index after the top-level block opening at `index` (such as `library {}`)."""
    while index < len(lines) and lines[index] != "}":
        index += 1
    return index + 1


def _parse_node(lines: Sequence[str], index: int) -> tuple[GraphNode, int]:
    fields: dict[str, list[str]] = {"name": [], "op": [], "input": []}
    attr_blocks: list[list[str]] = []
    while index < len(lines) and lines[index] != "}":
        line = lines[index]
        if line == "  attr {":
            end = index + 1
            while end < len(lines) and lines[end] != "  }":
                end += 1
            attr_blocks.append(list(lines[index : end + 1]))
            index = end + 1
            continue
        match = _FIELD_PATTERN.match(line)
        if match is None:
            raise TextGraphError(f"unexpected line in a node block: {line!r}")
        fields[match.group(1)].append(match.group(2))
        index += 1
    if len(fields["name"]) != 1 or len(fields["op"]) != 1:
        raise TextGraphError(f"a node block needs exactly one name and one op, got {fields}")
    node = GraphNode(fields["name"][0], fields["op"][0], fields["input"], attr_blocks)
    return node, index + 1


def detector_head_names(nodes: Iterable[GraphNode]) -> list[str]:
    """The box-encoding and class-logit convolutions of every predictor layer, layer by layer."""
    heads = sorted(
        (int(match.group(1)), match.group(2), node.name)
        for node in nodes
        if (match := _HEAD_PATTERN.match(node.name))
    )
    layers = {layer for layer, _, _ in heads}
    if not heads or len(heads) != 2 * len(layers) or layers != set(range(len(layers))):
        raise TextGraphError(
            "expected BoxPredictor_<i>/{BoxEncodingPredictor,ClassPredictor}/BiasAdd for layers 0..n-1, "
            f"found {[name for _, _, name in heads]}"
        )
    return [name for _, _, name in heads]


def prune_to_detector_heads(nodes: Sequence[GraphNode]) -> list[GraphNode]:
    """The subgraph from the preprocessed image to the predictor heads, in execution order."""
    by_name = {node.name: node for node in nodes}
    if PREPROCESSED_TENSOR not in by_name:
        raise TextGraphError(f"the graph has no {PREPROCESSED_TENSOR!r} node to start from")
    identity_source = {node.name: node.inputs[0] for node in nodes if node.op == "Identity" and node.inputs}

    def resolve(reference: str) -> str:
        """Follow Identity nodes back to the tensor they pass on."""
        seen: set[str] = set()
        while (name := _node_name(reference)) in identity_source and name not in seen:
            seen.add(name)
            reference = identity_source[name]
        return INPUT_NAME if reference in (PREPROCESSED_TENSOR, f"{PREPROCESSED_TENSOR}:0") else reference

    ordered: list[GraphNode] = []
    visited: set[str] = {INPUT_NAME}
    # Iterative post-order walk: the MobileNet graph is ~650 nodes deep along its spine.
    stack: list[tuple[str, bool]] = [(name, False) for name in reversed(detector_head_names(nodes))]
    while stack:
        name, inputs_done = stack.pop()
        if inputs_done:
            ordered.append(by_name[name])
            continue
        if name in visited:
            continue
        if name not in by_name:
            raise TextGraphError(f"node {name!r} is referenced but not defined")
        visited.add(name)
        node = by_name[name]
        inputs = [resolve(ref) for ref in node.inputs if not ref.startswith("^")]
        by_name[name] = GraphNode(node.name, node.op, inputs, node.attr_blocks)
        stack.append((name, True))
        stack.extend((_node_name(ref), False) for ref in reversed(inputs))

    stray_inputs = [node.name for node in ordered if node.op == "Placeholder"]
    if stray_inputs:
        raise TextGraphError(f"the heads also depend on inputs other than the preprocessed image: {stray_inputs}")
    placeholder = GraphNode(
        INPUT_NAME,
        "Placeholder",
        attr_blocks=[["  attr {", '    key: "dtype"', "    value {", "      type: DT_FLOAT", "    }", "  }"]],
    )
    return [placeholder, *(node for node in ordered if node.op != "Const")]


def _node_name(reference: str) -> str:
    """`name:1` -> `name` (an input may name a node's second output)."""
    return reference.split(":", 1)[0]


def format_text_graph(nodes: Iterable[GraphNode]) -> str:
    return "\n".join(line for node in nodes for line in node.to_text()) + "\n"


def write_text_graph(frozen_graph: Path, text_graph: Path) -> list[str]:
    """Write the pruned OpenCV text graph for `frozen_graph` to `text_graph`; return the head names.

    The file is written to a temporary name first and renamed, so a crash never leaves a
    half-written graph that the plugin would then try to load.
    """
    import cv2

    raw_dump = text_graph.with_name(text_graph.name + ".full.tmp")
    partial = text_graph.with_name(text_graph.name + ".tmp")
    try:
        cv2.dnn.writeTextGraph(str(frozen_graph), str(raw_dump))
        nodes = parse_text_graph(raw_dump.read_text(encoding="utf-8"))
        pruned = prune_to_detector_heads(nodes)
        partial.write_text(format_text_graph(pruned), encoding="utf-8")
        partial.replace(text_graph)
    finally:
        raw_dump.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return detector_head_names(pruned)
