"""A lane: instances of some of a run's nodes, used by one thread at a time, and what running
them on a frame means: each node in pipeline order, fed from the frame and the nodes before it,
its failure handled under its `on_error` policy, its time counted.

A run has one lane for the nodes that must see the frames in order (stateful ones and what
they feed) and, with frames in parallel, lanes of the frame-independent nodes
(`frame_independent_nodes`), an instance each. Apart from the run (`executor`), which decides
which frame goes into which lane, in which thread, and watches the time limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from videodag_service.dag.frame_result import FrameResults, FrameWork, NotSendable, node_error_entry
from videodag_service.dag.node_timings import RunTimings
from videodag_service.dag.plugin import ToolInstance
from videodag_service.dag.plugin_calls import call_plugin_containing_exits, close_quietly, described
from videodag_service.dag.spec import FRAME_FIELDS, ErrorPolicy, NodeSpec, PipelineSpec, SourceRef
from videodag_service.dag.time_limit import StepLimitedThread
from videodag_service.errors import NodeFailed

logger = logging.getLogger(__name__)


def frame_independent_nodes(spec: PipelineSpec) -> tuple[NodeSpec, ...]:
    """The nodes whose output for a frame depends on that frame only: stateless nodes fed by
    the frame and by other such nodes. Frames may pass through these in any order, or together."""
    independent: list[NodeSpec] = []
    ids: set[str] = set()
    for node in spec.nodes:  # in dependency order
        if not node.tool.stateful and all(source.is_frame or source.node in ids for _, source in node.inputs):
            independent.append(node)
            ids.add(node.id)
    return tuple(independent)


class Lane:
    """Nodes opened for one thread of a run: the instances it calls and the node it runs now.

    A lane with a `thread` runs its calls there, watched by the run's time limit; without
    one, the caller's thread runs them directly. A `bounded_time` lane (every tool in it
    promises a bounded time) may run in the caller's thread either way. `given_up` tells
    whether the run was given up on (a node over the time limit): a call returning after
    that, in an abandoned thread, goes no further.
    """

    def __init__(
        self, nodes: tuple[NodeSpec, ...], pipeline_id: str, timings: RunTimings, results: FrameResults,
        given_up: Callable[[], bool],
    ) -> None:
        self.nodes = nodes
        self.bounded_time = all(node.tool.bounded_time for node in nodes)
        self.instances: dict[str, ToolInstance] = {}
        self.opened = False
        self.thread: StepLimitedThread | None = None
        # The node running now and since when (perf_counter), read by the waiting caller.
        self.running: tuple[NodeSpec, float] | None = None
        self._pipeline_id = pipeline_id
        self._timings = timings
        self._results = results
        self._given_up = given_up

    def in_progress(self) -> tuple[NodeSpec, float] | None:
        return self.running

    def open(self) -> None:
        """An instance of each of the lane's nodes; if one cannot open, those opened before are closed.

        Each open is the lane's running step, so a lane's thread opening it is watched by the
        node time limit; an instance that opens after the run was given up is closed at once."""
        self.opened = True
        for node in self.nodes:
            self.running = (node, time.perf_counter())
            try:
                instance = call_plugin_containing_exits(node.tool.open, node.params_for_an_instance())
            except Exception as error:
                _log_plugin_failure(self._pipeline_id, node.id, "opening", error)
                for node_id, opened in self.instances.items():
                    close_quietly(opened, node_id, self._pipeline_id)
                self.instances.clear()
                raise NodeFailed(
                    self._pipeline_id, node.id, node.plugin_ref, None, described(error), opening=True
                ) from error
            finally:
                self.running = None
            if self._given_up():  # given up on while it opened: the run is over
                close_quietly(instance, node.id, self._pipeline_id)
                return
            self.instances[node.id] = instance

    def run(self, work: FrameWork, *, finish: bool) -> None:
        """Run the lane's nodes on the frame; with `finish`, also build the frame's result."""
        if not self.opened:
            self.open()
        frame_index = work.payload.get("frame_index")
        for node in self.nodes:
            blocked_by = next((s.node for _, s in node.inputs if s.node in work.failed), None)
            if blocked_by is not None:
                work.failed.add(node.id)
                work.errors.append(node_error_entry(node, "ABORTED", f"skipped because node {blocked_by!r} failed"))
                continue
            inputs = {name: _input_value(source, work.payload, work.values) for name, source in node.inputs}
            try:
                outputs, sent = self._call(node, inputs)
            except Exception as error:
                cause = str(error) if isinstance(error, NotSendable) else described(error)
                _log_plugin_failure(self._pipeline_id, node.id, f"on frame {frame_index}", error)
                self._timings.count_error(node)
                if node.on_error is ErrorPolicy.FAIL:
                    raise NodeFailed(self._pipeline_id, node.id, node.plugin_ref, frame_index, cause) from error
                work.failed.add(node.id)
                work.errors.append(node_error_entry(node, "INTERNAL", cause))
                continue
            for port in node.tool.outputs:
                work.values[SourceRef(node.id, port.name)] = outputs[port.name]
            work.sent.update(sent)
        if finish:
            self._results.assemble(work, frame_index)

    def _call(self, node: NodeSpec, inputs: dict[str, Any]) -> tuple[Mapping[str, Any], dict[str, tuple[Any, int]]]:
        """The node's outputs, and those the pipeline sends (`FrameWork.sent`) converted.

        Converting an output is its node's work, on its clock and in its time: one that cannot
        be converted fails the node (`NotSendable`) before any node reads it, so under
        `on_error: skip` the nodes it feeds are skipped, as after a failed call.
        """
        if self._given_up():
            # Only an abandoned thread gets here, after its hung call returned: the run is over.
            raise RuntimeError(f"run of pipeline {self._pipeline_id!r} was stopped by a node time limit")
        started = time.perf_counter()
        # Watched by the time limit, unless its time is bounded (it may run in a lane's thread
        # all the same, when it takes long enough for frames in parallel).
        self.running = None if node.tool.bounded_time else (node, started)
        try:
            outputs = call_plugin_containing_exits(self.instances[node.id].process, inputs)
            if not isinstance(outputs, Mapping):
                raise TypeError(f"returned {type(outputs).__name__}, not a mapping of outputs")
            missing = [port.name for port in node.tool.outputs if port.name not in outputs]
            if missing:
                raise KeyError(f"returned no {', '.join(map(repr, missing))} output")
            # Watched even for a tool of bounded time: a value's to_json() is code of its own.
            self.running = (node, time.perf_counter())
            return outputs, call_plugin_containing_exits(self._results.sendable, node, outputs)
        finally:
            self.running = None
            self._timings.count_call(node, time.perf_counter() - started)


def _input_value(source: SourceRef, payload: Mapping[str, Any], values: Mapping[SourceRef, Any]) -> Any:
    """What a node's input wired to `source` gets: a frame field, or an output of a node before it."""
    # Payload keys are read only when a node asks, so a lazy payload encodes image_bytes on demand.
    if source.is_frame:
        return payload[FRAME_FIELDS[source.output]]
    return values[source]


def _log_plugin_failure(pipeline_id: str, node_id: str, when: str, error: BaseException) -> None:
    """The plugin's traceback, for its author (`--log-level debug`): the call's status and the
    frame's errors carry the exception's text only, and a skipped node's failure is logged nowhere else."""
    logger.debug("node %r of pipeline %r failed %s", node_id, pipeline_id, when, exc_info=error)
