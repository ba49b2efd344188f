"""A loaded, validated pipeline: plain frozen values the executor walks per frame."""

from __future__ import annotations

import functools
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from videodag_service.dag.plugin import Tool

# Ids are names, never paths: nothing from a request may reach the filesystem.
MAX_PIPELINE_ID_LENGTH = 128
PIPELINE_ID_CHARS = "a-z0-9_.-"
PIPELINE_ID_PATTERN = re.compile(rf"^[{PIPELINE_ID_CHARS}]{{1,{MAX_PIPELINE_ID_LENGTH}}}$")
# A pipeline file's id also starts with a letter or digit: one of punctuation only ("..") is no name.
# Requests are still checked against PIPELINE_ID_PATTERN: such an id is merely unknown there.
PIPELINE_FILE_ID_PATTERN = re.compile(rf"^[a-z0-9][{PIPELINE_ID_CHARS}]{{0,{MAX_PIPELINE_ID_LENGTH - 1}}}$")


def requested_id_problem(pipeline_id: str) -> str | None:
    """Why a requested pipeline id is no name (INVALID_PIPELINE_ID); None for a name, or for
    no id at all, which is a pipeline not found (the known ids then help the caller)."""
    if len(pipeline_id) > MAX_PIPELINE_ID_LENGTH:
        return (f"pipeline id {pipeline_id[:40]!r}… has {len(pipeline_id)} characters; ids have at most "
                f"{MAX_PIPELINE_ID_LENGTH}")
    if pipeline_id and not PIPELINE_ID_PATTERN.fullmatch(pipeline_id):  # fullmatch: "$" lets a final newline by
        return f"pipeline id {pipeline_id!r} is not a name matching [{PIPELINE_ID_CHARS}]+"
    return None


# Node ids appear in "node.output" references, so they cannot contain dots.
MAX_NODE_ID_LENGTH = 64
NODE_ID_CHARS = "A-Za-z0-9_-"
NODE_ID_PATTERN = re.compile(rf"^[A-Za-z0-9][{NODE_ID_CHARS}]{{0,{MAX_NODE_ID_LENGTH - 1}}}$")

FRAME_SOURCE = "frame"
# What a node may read from the frame, and the payload key each one comes from.
FRAME_FIELDS: Mapping[str, str] = {
    "image": "image",
    "image_bytes": "image_bytes",
    "index": "frame_index",
    "timestamp": "timestamp",
}
# The kind of each frame field (see plugin.PORT_KINDS): the loader checks it against the inputs
# the field is wired to, and the plugin reference shows it, so the two cannot disagree.
FRAME_FIELD_KINDS: Mapping[str, str] = {
    "image": "image",
    "image_bytes": "jpeg",
    "index": "int",
    "timestamp": "float",
}
# Frame results carry node failures under this key, so no output may use it.
RESERVED_OUTPUT_NAMES = frozenset({"errors"})


@dataclass(frozen=True)
class SourceRef:
    """Where a value comes from: `frame.<field>` or `<node_id>.<output>`."""

    node: str
    output: str

    @property
    def is_frame(self) -> bool:
        return self.node == FRAME_SOURCE

    def __str__(self) -> str:
        return f"{self.node}.{self.output}"


class ErrorPolicy(Enum):
    """What a node does when its tool fails on a frame."""

    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class NodeSpec:
    """One node: the tool it calls, its validated parameters and its wired inputs.

    `params` has every declared parameter (defaults filled in); `given_params` is what
    the pipeline file said, shown to clients as written.
    """

    id: str
    plugin_ref: str
    tool: Tool
    params: Mapping[str, Any]
    given_params: Mapping[str, Any]
    inputs: tuple[tuple[str, SourceRef], ...]
    on_error: ErrorPolicy

    def params_for_an_instance(self) -> dict[str, Any]:
        """A copy of `params` of its own: an instance keeping a list parameter as its state and
        changing it would otherwise change it for every later run, and in what GetPipeline shows.
        Unpickled from bytes made once, three times faster than a deep copy: a parameter may
        hold 100,000 values, and each run opens its nodes."""
        copied: dict[str, Any] = pickle.loads(self._pickled_params)
        return copied

    @functools.cached_property
    def _pickled_params(self) -> bytes:
        return pickle.dumps(dict(self.params), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline; `nodes` are in topological order."""

    id: str
    version: str
    description: str
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[tuple[str, SourceRef], ...]
    source_path: Path

    def unread_nodes(self) -> list[str]:
        """Nodes whose outputs no node and no output reads: each runs on every frame for nothing
        (a detector left behind after an edit), unless its tool acts of its own accord."""
        read = {source.node for _, source in self.outputs}
        read.update(source.node for node in self.nodes for _, source in node.inputs)
        return [node.id for node in self.nodes if node.id not in read]
