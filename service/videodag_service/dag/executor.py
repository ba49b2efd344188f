"""Run a pipeline over the frames of one video: `PipelineRun`.

A run opens one instance of every node's tool, so stateful nodes (trackers) live for
exactly one video and two runs never share state. `close()` closes every instance
once, whatever happened before. Results leave the run JSON-like; anything else is a
failure of the node that produced it.

With a node time limit, a run's frames are processed in a thread of the run's own
(`videodag-nodes`) while the caller waits, watching the node that runs: a node call over the
limit fails the run with `NodeTimedOut`. Python cannot stop that call, so its thread is
abandoned (a daemon, counted by `abandoned_thread_count()` and logged); the run's other
instances are closed as usual, the hung one by the abandoned thread if its call ever returns,
so `close` never runs under a live call. Without a limit the caller's thread runs the nodes
directly: no hand-off, no extra thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from videodag_service.dag.plugin import ToolInstance
from videodag_service.dag.spec import FRAME_FIELDS, ErrorPolicy, NodeSpec, PipelineSpec, SourceRef
from videodag_service.dag.time_limit import StepLimitedThread, StepTimedOut, abandoned_thread_count
from videodag_service.errors import NodeFailed, NodeTimedOut

logger = logging.getLogger(__name__)

NODE_THREAD_NAME = "videodag-nodes"


@dataclass
class NodeTiming:
    """Time spent in one node over a run."""

    node_id: str
    plugin: str
    calls: int = 0
    total_seconds: float = 0.0
    errors: int = 0


class NotJsonLike(TypeError):
    """Raised when a value cannot be part of a frame result."""


def to_json_like(value: Any) -> Any:
    """Convert a node output into JSON-like values (dicts, lists, str, finite numbers, bool, None).

    Values with a `to_json()` method (such as `Detections`) convert themselves; numpy
    scalars and arrays become Python numbers and lists.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonLike(f"non-finite number {value!r}")
        return value
    if isinstance(value, np.generic):
        return to_json_like(value.item())
    if isinstance(value, np.ndarray):
        return to_json_like(value.tolist())
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json_like(to_json())
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJsonLike(f"mapping key {key!r} is not a string")
            converted[key] = to_json_like(item)
        return converted
    if isinstance(value, list | tuple):
        return [to_json_like(item) for item in value]
    raise NotJsonLike(f"value of type {type(value).__name__}")


# Called after every node call with (pipeline_id, node_id, plugin, seconds): exact latencies for metrics.
NodeObserver = Callable[[str, str, str, float], None]


class PipelineRun:
    """One pipeline applied to the frames of one video, in order."""

    def __init__(
        self,
        spec: PipelineSpec,
        node_observer: NodeObserver | None = None,
        node_timeout_seconds: float | None = None,
    ) -> None:
        if node_timeout_seconds is not None and node_timeout_seconds <= 0:
            raise ValueError(f"node_timeout_seconds must be positive or None, got {node_timeout_seconds}")
        self.spec = spec
        self._node_observer = node_observer
        self._node_timeout_seconds = node_timeout_seconds
        self._node_thread: StepLimitedThread | None = None
        # The node running now and since when (perf_counter), read by the waiting caller.
        self._running_node: tuple[NodeSpec, float] | None = None
        self._timed_out: NodeTimedOut | None = None
        self._instances: dict[str, ToolInstance] = {}
        self._timings = {node.id: NodeTiming(node.id, node.plugin_ref) for node in spec.nodes}
        self._nodes_by_id = {node.id: node for node in spec.nodes}
        self._closed = False
        try:
            for node in spec.nodes:
                self._instances[node.id] = node.tool.open(node.params)
        except Exception as error:
            self.close()
            raise NodeFailed(spec.id, node.id, node.plugin_ref, None, f"could not open: {error}") from error

    def process(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run every node on one frame and return its JSON-like result.

        Failures of `on_error: skip` nodes appear under "errors" and leave their
        outputs (and those of nodes depending on them) out of the result.
        """
        if self._closed:
            raise RuntimeError(f"run of pipeline {self.spec.id!r} is closed")
        if self._timed_out is not None:
            raise self._timed_out
        if self._node_timeout_seconds is None:
            return self._process(payload)
        return self._process_within_time_limit(payload, self._node_timeout_seconds)

    def _process(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        frame_index = payload.get("frame_index")
        values: dict[SourceRef, Any] = {}
        failed: set[str] = set()
        errors: list[dict[str, Any]] = []
        for node in self.spec.nodes:
            blocked_by = next((s.node for _, s in node.inputs if s.node in failed), None)
            if blocked_by is not None:
                failed.add(node.id)
                errors.append(_error(node, "ABORTED", f"skipped because node {blocked_by!r} failed"))
                continue
            inputs = {name: _read(source, payload, values) for name, source in node.inputs}
            try:
                outputs = self._call(node, inputs)
            except Exception as error:
                self._timings[node.id].errors += 1
                if node.on_error is ErrorPolicy.FAIL:
                    raise NodeFailed(
                        self.spec.id, node.id, node.plugin_ref, frame_index, f"{type(error).__name__}: {error}"
                    ) from error
                failed.add(node.id)
                errors.append(_error(node, "INTERNAL", f"{type(error).__name__}: {error}"))
                continue
            for port in node.tool.outputs:
                values[SourceRef(node.id, port.name)] = outputs[port.name]
        result = self._result(values, frame_index)
        if errors:
            result["errors"] = errors
        return result

    def node_timings(self) -> list[NodeTiming]:
        """Per-node time so far, in pipeline order."""
        return [self._timings[node.id] for node in self.spec.nodes]

    def close(self) -> None:
        """Close every opened instance exactly once; a failing close is logged, not raised."""
        if self._closed:
            return
        self._closed = True
        if self._node_thread is not None:
            self._node_thread.close()
            self._node_thread = None
        for node_id, instance in self._instances.items():
            _close_quietly(instance, node_id, self.spec.id)
        self._instances.clear()

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _process_within_time_limit(self, payload: Mapping[str, Any], limit_seconds: float) -> dict[str, Any]:
        if self._node_thread is None:
            self._node_thread = StepLimitedThread(limit_seconds, self._node_in_progress, NODE_THREAD_NAME)
        try:
            return self._node_thread.call(self._process, payload)
        except StepTimedOut as timed_out:
            node = cast(NodeSpec, timed_out.step)
            self._timed_out = NodeTimedOut(
                self.spec.id, node.id, node.plugin_ref, payload.get("frame_index"), limit_seconds
            )
            self._abandon_node_thread(node)
            raise self._timed_out from None

    def _abandon_node_thread(self, node: NodeSpec) -> None:
        """Leave the hung node's instance to its thread: closing it under a live call is unsafe."""
        assert self._node_thread is not None
        instance = self._instances.pop(node.id, None)
        self._node_thread.abandon(lambda: _close_quietly(instance, node.id, self.spec.id))
        self._node_thread = None
        self._timings[node.id].errors += 1
        logger.error(
            "%s; its thread is abandoned (%d abandoned in this process)", self._timed_out, abandoned_thread_count()
        )

    def _node_in_progress(self) -> tuple[NodeSpec, float] | None:
        return self._running_node

    def _call(self, node: NodeSpec, inputs: dict[str, Any]) -> Mapping[str, Any]:
        if self._timed_out is not None:
            # Only an abandoned thread gets here, after its hung call returned: the run is over.
            raise RuntimeError(f"run of pipeline {self.spec.id!r} was stopped by a node time limit")
        timing = self._timings[node.id]
        started = time.perf_counter()
        self._running_node = (node, started)
        try:
            outputs = self._instances[node.id].process(inputs)
        finally:
            self._running_node = None
            elapsed = time.perf_counter() - started
            timing.calls += 1
            timing.total_seconds += elapsed
            if self._node_observer is not None:
                self._node_observer(self.spec.id, node.id, node.plugin_ref, elapsed)
        if not isinstance(outputs, Mapping):
            raise TypeError(f"returned {type(outputs).__name__}, not a mapping of outputs")
        missing = [port.name for port in node.tool.outputs if port.name not in outputs]
        if missing:
            raise KeyError(f"returned no {', '.join(map(repr, missing))} output")
        return outputs

    def _result(self, values: Mapping[SourceRef, Any], frame_index: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, source in self.spec.outputs:
            if source not in values:
                continue  # its node was skipped; the reason is in "errors"
            node = self._nodes_by_id[source.node]
            # A value's own to_json() is plugin code too, so it runs on its node's clock.
            self._running_node = (node, time.perf_counter())
            try:
                result[name] = to_json_like(values[source])
            except NotJsonLike as error:
                raise NodeFailed(
                    self.spec.id, node.id, node.plugin_ref, frame_index,
                    f"output {source.output!r} is not JSON-like: {error}",
                ) from error
            finally:
                self._running_node = None
        return result


def _read(source: SourceRef, payload: Mapping[str, Any], values: Mapping[SourceRef, Any]) -> Any:
    # Payload keys are read only when a node asks, so a lazy payload encodes image_bytes on demand.
    if source.is_frame:
        return payload[FRAME_FIELDS[source.output]]
    return values[source]


def _close_quietly(instance: ToolInstance | None, node_id: str, pipeline_id: str) -> None:
    if instance is None:
        return
    try:
        instance.close()
    except Exception:
        logger.exception("closing node %r of pipeline %r failed", node_id, pipeline_id)


def _error(node: NodeSpec, code: str, message: str) -> dict[str, Any]:
    return {"node_id": node.id, "plugin": node.plugin_ref, "code": code, "message": message}
