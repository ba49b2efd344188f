"""The pipelines a server runs, as immutable values converted from `videodag.v1.Pipeline`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from videodag.v1 import pipeline_pb2
from videodag_client._events import struct_to_dict

OnError: TypeAlias = Literal["fail", "skip"]

_ON_ERROR_BY_ENUM: dict[int, OnError] = {
    pipeline_pb2.NODE_ERROR_POLICY_UNSPECIFIED: "fail",
    pipeline_pb2.NODE_ERROR_POLICY_FAIL: "fail",
    pipeline_pb2.NODE_ERROR_POLICY_SKIP: "skip",
}


@dataclass(frozen=True)
class NodeInput:
    """One input of a node and where its value comes from."""

    name: str
    source: str
    """"frame.<field>" or "<node_id>.<output>"."""


@dataclass(frozen=True)
class PipelineNode:
    """One plugin tool call the pipeline makes on every frame."""

    id: str
    plugin: str
    """"plugin.tool", such as "ssdlite.detect_people"."""
    inputs: tuple[NodeInput, ...]
    params: dict[str, Any] = field(hash=False)
    """As the pipeline file gives them (defaults not filled in), through a protobuf Struct, which
    carries every number as a double: whole numbers come back as ints, a file's `1.0` too,
    others as floats (as in `FrameResult.result`). Compare numbers by value, not by type."""
    on_error: OnError
    """"fail" ends the run on a plugin error; "skip" reports it in `FrameResult.node_errors`."""
    stateful: bool
    """Keeps state across frames (a tracker), so each run gets its own instance."""


@dataclass(frozen=True)
class PipelineOutput:
    """One key of every frame's result and the node output it comes from."""

    name: str
    source: str


@dataclass(frozen=True)
class PipelineInfo:
    """A named, versioned pipeline: what `pipeline_id` in a run refers to."""

    id: str
    version: str
    description: str
    nodes: tuple[PipelineNode, ...]
    """In an order where every node comes after its inputs."""
    outputs: tuple[PipelineOutput, ...]


def pipeline_from_proto(pipeline: pipeline_pb2.Pipeline) -> PipelineInfo:
    return PipelineInfo(
        id=pipeline.id,
        version=pipeline.version,
        description=pipeline.description,
        nodes=tuple(
            PipelineNode(
                id=node.id,
                plugin=node.plugin,
                inputs=tuple(NodeInput(i.name, i.source) for i in node.inputs),
                params=struct_to_dict(node.params),
                on_error=_ON_ERROR_BY_ENUM.get(node.on_error, "fail"),
                stateful=node.stateful,
            )
            for node in pipeline.nodes
        ),
        outputs=tuple(PipelineOutput(o.name, o.source) for o in pipeline.outputs),
    )
