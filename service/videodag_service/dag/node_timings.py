"""Each node's calls, time and errors over one run, counted from every thread that runs it.

Apart from the run's scheduling because every part of a run counts into them: a lane counts
its calls and failures, the assembly of a frame's result counts an output too large to send,
the run counts a call over the node time limit. One lock guards them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from videodag_service.dag.spec import NodeSpec, PipelineSpec


@dataclass
class NodeTiming:
    """Time spent in one node over a run."""

    node_id: str
    plugin: str
    calls: int = 0
    total_seconds: float = 0.0
    errors: int = 0


# Called after every node call with (pipeline_id, node_id, plugin, seconds): exact latencies for metrics.
NodeObserver = Callable[[str, str, str, float], None]


class RunTimings:
    """A run's `NodeTiming`s, one a node, changed under one lock: a run's lanes count into them
    from threads of their own while the caller reads them."""

    def __init__(self, spec: PipelineSpec, observer: NodeObserver | None) -> None:
        self._pipeline_id = spec.id
        self._observer = observer
        self._by_node = {node.id: NodeTiming(node.id, node.plugin_ref) for node in spec.nodes}
        self._lock = threading.Lock()

    def of(self, nodes: Iterable[NodeSpec]) -> list[NodeTiming]:
        """The nodes' timings, in the order given; they go on counting."""
        return [self._by_node[node.id] for node in nodes]

    def count_call(self, node: NodeSpec, seconds: float) -> None:
        """One call of the node, told to the observer too."""
        with self._lock:
            timing = self._by_node[node.id]
            timing.calls += 1
            timing.total_seconds += seconds
        if self._observer is not None:
            self._observer(self._pipeline_id, node.id, node.plugin_ref, seconds)

    def count_error(self, node: NodeSpec) -> None:
        with self._lock:
            self._by_node[node.id].errors += 1

    def frame_seconds(self, timings: Sequence[NodeTiming]) -> float | None:
        """The time these nodes took a frame so far, on average (`of` gives them); None before their first frame."""
        with self._lock:
            frames = max((timing.calls for timing in timings), default=0)
            seconds = sum(timing.total_seconds for timing in timings)
        return seconds / frames if frames else None
