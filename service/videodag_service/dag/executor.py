"""Run a pipeline over the frames of one video: `PipelineRun`.

A run opens its own instances of the nodes' tools, so stateful nodes (trackers) live for
exactly one video and two runs never share state. `close()` closes every instance
once, whatever happened before. Results leave the run JSON-like; anything else is a
failure of the node that produced it.

Nodes run in lanes: a lane is a set of instances used by one thread at a time. The
stateful nodes, and the nodes they feed, share one lane and see the frames one by one in
frame order. With `frame_workers` above one, the nodes that depend on the current frame
only get that many lanes of their own (an instance each), so several frames pass through
them at once (`process_frames`).

With a node time limit, or with parallel lanes, a lane's calls run in a thread of its own
(`videodag-nodes`) while the caller waits, watching the node that runs: a node call over the
limit fails the run with `NodeTimedOut`. Python cannot stop that call, so its thread is
abandoned (a daemon, counted by `abandoned_thread_count()` and logged); the run's other
instances are closed as usual, the hung one by the abandoned thread if its call ever returns,
so `close` never runs under a live call. Without a limit the caller's thread runs the
ordered lane directly: no hand-off, no extra thread. So does it run a lane whose tools all
promise a bounded time (`Tool.bounded_time`), limit or not, unless they prove slow enough
for frames in parallel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from videodag_service.dag.json_like import NotJsonLike, encoded_size, entry_bound, to_json_like_sized
from videodag_service.dag.plugin import ToolInstance
from videodag_service.dag.spec import FRAME_FIELDS, ErrorPolicy, NodeSpec, PipelineSpec, SourceRef
from videodag_service.dag.time_limit import StepLimitedThread, StepTimedOut, abandoned_thread_count
from videodag_service.errors import NodeFailed, NodeTimedOut

T = TypeVar("T")
logger = logging.getLogger(__name__)

NODE_THREAD_NAME = "videodag-nodes"

PARALLEL_MIN_SECONDS = 0.001
"""A second frame goes into the parallel lanes only while the frame-independent nodes take at
least this long a frame (their average over the run so far). Below it, a second frame in
flight saves less than its hand-offs cost: end to end on 2 cores, `frame_stats_v1` (0.05 ms
a frame) went 3-5% faster with one frame at a time, while a detector (20 ms) goes 8% faster
with two."""
# How much of a plugin exception's text a failure reports; and in a result too large to send.
MAX_ERROR_MESSAGE_CHARS = 2000
_CUT_ERROR_MESSAGE_CHARS = 200


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


@dataclass
class _FrameWork:
    """One frame on its way through the nodes: what they produced and what failed so far."""

    payload: Mapping[str, Any]
    values: dict[SourceRef, Any] = field(default_factory=dict)
    sent: dict[str, tuple[Any, int]] = field(default_factory=dict)
    """The pipeline's outputs so far, as they go out: JSON-like, with a bound of their bytes."""
    failed: set[str] = field(default_factory=set)
    errors: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    ran_inline: bool = False
    """Its lane ran in the caller's thread (`_start`): done already, nothing to wait for."""
    inline_error: Exception | None = None
    """What that call raised, raised again when the frame's turn comes, as a thread's would be."""


class _Lane:
    """Nodes opened for one thread of a run: the instances it calls and the node it runs now.

    A lane with a `thread` runs its calls there, watched by the run's time limit; without
    one, the caller's thread runs them directly. A `bounded_time` lane (every tool in it
    promises a bounded time) may run in the caller's thread either way.
    """

    def __init__(self, nodes: tuple[NodeSpec, ...]) -> None:
        self.nodes = nodes
        self.bounded_time = all(node.tool.bounded_time for node in nodes)
        self.instances: dict[str, ToolInstance] = {}
        self.opened = False
        self.thread: StepLimitedThread | None = None
        # The node running now and since when (perf_counter), read by the waiting caller.
        self.running: tuple[NodeSpec, float] | None = None

    def in_progress(self) -> tuple[NodeSpec, float] | None:
        return self.running


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


class PipelineRun:
    """One pipeline applied to the frames of one video, in order.

    `process_frames` may run the frame-independent nodes (`frame_independent_nodes`) of up to
    `frame_workers` frames at once, each frame in a lane of its own with its own instances;
    the other nodes (stateful ones and what they feed) run in one lane, one frame after the
    other in frame order. A detector runs on two frames at once on two cores this way while
    the tracker after it still sees every frame in order: one forward pass per core beats one
    pass spread over both, whose threads wait for each other between layers.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        node_observer: NodeObserver | None = None,
        node_timeout_seconds: float | None = None,
        frame_workers: int = 1,
        max_result_bytes: int | None = None,
    ) -> None:
        if node_timeout_seconds is not None and node_timeout_seconds <= 0:
            raise ValueError(f"node_timeout_seconds must be positive or None, got {node_timeout_seconds}")
        if frame_workers < 1:
            raise ValueError(f"frame_workers must be at least 1, got {frame_workers}")
        self.spec = spec
        self._node_observer = node_observer
        self._node_timeout_seconds = node_timeout_seconds
        self._max_result_bytes = max_result_bytes
        self._timed_out: NodeTimedOut | None = None
        self._timings = {node.id: NodeTiming(node.id, node.plugin_ref) for node in spec.nodes}
        self._timings_lock = threading.Lock()
        self._nodes_by_id = {node.id: node for node in spec.nodes}
        self._sent_by_node: dict[str, list[tuple[str, SourceRef]]] = {}
        for name, source in spec.outputs:
            self._sent_by_node.setdefault(source.node, []).append((name, source))
        self._closed = False
        independent = frame_independent_nodes(spec) if frame_workers > 1 else ()
        independent_ids = {node.id for node in independent}
        self._independent_timings = [self._timings[node.id] for node in independent]
        ordered = tuple(node for node in spec.nodes if node.id not in independent_ids)
        self._parallel = [_Lane(independent) for _ in range(frame_workers if independent else 0)]
        self._ordered = _Lane(ordered) if ordered else None
        # The first lanes open now, so a tool that cannot open fails the run before its first
        # frame; the other parallel lanes open in their own thread on their first frame, so
        # a short video never opens instances it will not use.
        try:
            for lane in self._parallel[:1] + ([self._ordered] if self._ordered is not None else []):
                self._open_within_limit(lane)
        except Exception:
            self.close()
            raise
        # Free lanes, the most recently freed last: a frame takes that one (`_take`), so frames
        # going one at a time stay in the first lane and the others never open.
        self._free: deque[_Lane] = deque(reversed(self._parallel))

    def process(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run every node on one frame and return its JSON-like result.

        Failures of `on_error: skip` nodes appear under "errors" and leave their
        outputs (and those of nodes depending on them) out of the result.
        """
        for _, result in self.process_frames((payload,)):
            return result
        raise AssertionError("process_frames gave no result for a frame")

    def process_frames(
        self, payloads: Iterable[Mapping[str, Any]], ready: Callable[[], bool] | None = None
    ) -> Iterator[tuple[Mapping[str, Any], dict[str, Any]]]:
        """`(payload, result)` for each payload, in order, as `process` would give them.

        A result is handed out as soon as it and every result before it are done, with one
        exception that keeps the cores busy: when a frame leaves its lane, the next payloads
        are taken and started in the free lanes before the frame's ordered nodes run and its
        result is handed out. The first frame goes alone, so the first result is not slowed
        by the second frame sharing the cores; after it, at most `frame_workers` frames (and
        the payloads holding them) are in the run at once, and more than one only while the
        frame-independent nodes are slow enough to pay for it (`PARALLEL_MIN_SECONDS`). An
        error raised by `payloads` comes after the results of the frames taken before it, as
        it would one frame at a time. Closing the iterator early waits for the frames in
        flight (within the time limit) before it returns.

        `ready`, when given, tells whether the next payload can be had without waiting (a
        frame already decoded). A done frame is then not held back to fill lanes with frames
        still being decoded: free lanes are filled before a result is handed out only with
        payloads ready now, and the run waits for the source only while nothing is pending
        or the oldest frame is still in its lane (should that frame finish meanwhile, its
        result waits for one decode at most). For a cheap pipeline, where decoding sets the
        pace, each result goes out one decoded frame earlier. Without it every payload
        counts as ready, as those of a list are.
        """
        self._check_usable()
        is_ready = ready or _always
        pending: deque[tuple[_Lane | None, _FrameWork]] = deque()
        source = iter(payloads)
        exhausted = False
        source_error: Exception | None = None
        handed_out = False
        try:
            while True:
                while not exhausted and self._should_take(pending, handed_out, is_ready):
                    exhausted, source_error = self._take(source, pending)
                if not pending:
                    break
                lane, work = pending.popleft()
                self._wait_for_lane(lane, work)
                while not exhausted and self._free and self._parallel_pays() and is_ready():
                    exhausted, source_error = self._take(source, pending)
                self._run_ordered(work)
                yield work.payload, cast(dict[str, Any], work.result)
                del work
                handed_out = True
            if source_error is not None:
                raise source_error
        finally:
            self._settle(pending)

    def node_timings(self) -> list[NodeTiming]:
        """Per-node time so far, in pipeline order."""
        return [self._timings[node.id] for node in self.spec.nodes]

    def close(self) -> None:
        """Close every opened instance exactly once; a failing close is logged, not raised."""
        if self._closed:
            return
        self._closed = True
        for lane in self._lanes():
            self._close_within_limit(lane)
            lane.instances.clear()

    def _close_within_limit(self, lane: _Lane) -> None:
        """The lane's instances closed in its thread, each close watched by the node time limit
        as its open and its calls are: a close that never returns (a flush to a server that does
        not answer) would hold the run's slot, its summary and the server's shutdown for good.
        One over the limit is logged and left to its thread, with the closes after it."""
        if lane.thread is not None:
            lane.thread.close()
            lane.thread = None
        instances = [(node, lane.instances[node.id]) for node in lane.nodes if node.id in lane.instances]
        # Its own record of the close running now: a hung call of the lane's abandoned thread still holds `running`.
        closing: list[tuple[NodeSpec, float] | None] = [None]
        if self._node_timeout_seconds is None or lane.bounded_time or not instances:
            self._close_in_order(closing, instances)
            return
        closer = StepLimitedThread(self._node_timeout_seconds, lambda: closing[0], NODE_THREAD_NAME)
        try:
            closer.call(functools.partial(self._close_in_order, closing), instances)
        except StepTimedOut as timed_out:
            node = cast(NodeSpec, timed_out.step)
            closer.abandon(lambda: None)  # the closes after the hung one still run if it returns
            with self._timings_lock:
                self._timings[node.id].errors += 1
            logger.error("closing node %r (%s) of pipeline %r took more than the node time limit (%g s); its "
                         "thread is abandoned (%d abandoned in this process)", node.id, node.plugin_ref, self.spec.id,
                         timed_out.limit_seconds, abandoned_thread_count())
        else:
            closer.close()

    def _close_in_order(
        self, closing: list[tuple[NodeSpec, float] | None], instances: list[tuple[NodeSpec, ToolInstance]]
    ) -> None:
        for node, instance in instances:
            closing[0] = (node, time.perf_counter())
            try:
                _close_quietly(instance, node.id, self.spec.id)
            finally:
                closing[0] = None

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _lanes(self) -> list[_Lane]:
        return [*self._parallel, *([self._ordered] if self._ordered is not None else [])]

    def _open_within_limit(self, lane: _Lane) -> None:
        """`_open` in the lane's thread, each node's open watched by the node time limit, unless
        every tool of the lane promises a bounded time: a tool whose open never returns (a
        model fetched from a server that does not answer) would hold the run, and its slot, for good."""
        if self._node_timeout_seconds is None or lane.bounded_time:
            self._open(lane)
            return
        lane.thread = StepLimitedThread(self._node_timeout_seconds, lane.in_progress, NODE_THREAD_NAME)
        try:
            lane.thread.call(self._open, lane)
        except StepTimedOut as timed_out:
            node = cast(NodeSpec, timed_out.step)
            self._timed_out = NodeTimedOut(
                self.spec.id, node.id, node.plugin_ref, None, timed_out.limit_seconds, opening=True
            )
            # The hung open closes what it opens if it ever returns (`_open`); `close` the others.
            lane.thread.abandon(lambda: None)
            lane.thread = None
            with self._timings_lock:
                self._timings[node.id].errors += 1
            logger.error("%s; its thread is abandoned (%d abandoned in this process)",
                         self._timed_out, abandoned_thread_count())
            raise self._timed_out from None

    def _open(self, lane: _Lane) -> None:
        """An instance of each of the lane's nodes; if one cannot open, those opened before are closed.

        Each open is the lane's running step, so a lane's thread opening it is watched by the
        node time limit; an instance that opens after the run was given up is closed at once."""
        lane.opened = True
        for node in lane.nodes:
            lane.running = (node, time.perf_counter())
            try:
                instance = _ending_nothing_but_the_node(node.tool.open, node.params_for_an_instance())
            except Exception as error:
                for node_id, opened in lane.instances.items():
                    _close_quietly(opened, node_id, self.spec.id)
                lane.instances.clear()
                raise NodeFailed(
                    self.spec.id, node.id, node.plugin_ref, None, _described(error), opening=True
                ) from error
            finally:
                lane.running = None
            if self._timed_out is not None:  # given up on while it opened: the run is over
                _close_quietly(instance, node.id, self.spec.id)
                return
            lane.instances[node.id] = instance

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(f"run of pipeline {self.spec.id!r} is closed")
        if self._timed_out is not None:
            raise self._timed_out

    def _start(self, lane: _Lane, work: _FrameWork, *, finish: bool) -> None:
        """Start `lane`'s nodes on the frame in the lane's thread (started on first use), or run
        them here and now when their time is bounded and frames go one at a time (a free
        lane's thread, if it has one, is idle)."""
        if lane.bounded_time and not self._measured_slow():
            try:
                self._run_lane(lane, work, finish=finish)
            except Exception as error:  # raised when the frame's turn comes (`_wait_for_lane`)
                work.inline_error = error
            work.ran_inline = True
            return
        if lane.thread is None:
            lane.thread = StepLimitedThread(self._node_timeout_seconds, lane.in_progress, NODE_THREAD_NAME)
        lane.thread.submit(functools.partial(self._run_lane, lane, finish=finish), work)

    def _should_take(
        self, pending: deque[tuple[_Lane | None, _FrameWork]], handed_out: bool, ready: Callable[[], bool]
    ) -> bool:
        """Whether to take the next payload now: always with nothing pending; otherwise only
        into a free lane once the first result is out, and without waiting on the source
        while the oldest pending frame could be handed out."""
        if not pending:
            return True
        if not (self._free and handed_out and self._parallel_pays()):
            return False
        if ready():
            return True
        oldest_lane, oldest = pending[0]
        return (oldest_lane is not None and not oldest.ran_inline and oldest_lane.thread is not None
                and not oldest_lane.thread.ready())

    def _parallel_pays(self) -> bool:
        """Whether the frame-independent nodes are slow enough for more than one frame in flight
        (`PARALLEL_MIN_SECONDS`); a run whose nodes have not run yet counts as slow."""
        average = self._independent_average_seconds()
        return average is None or average >= PARALLEL_MIN_SECONDS

    def _measured_slow(self) -> bool:
        """Whether the frame-independent nodes have run and proved slow enough for frames in parallel."""
        average = self._independent_average_seconds()
        return average is not None and average >= PARALLEL_MIN_SECONDS

    def _independent_average_seconds(self) -> float | None:
        """The frame-independent nodes' time a frame so far; None before their first frame."""
        with self._timings_lock:
            frames = max((timing.calls for timing in self._independent_timings), default=0)
            seconds = sum(timing.total_seconds for timing in self._independent_timings)
        return seconds / frames if frames else None

    def _take(
        self, source: Iterator[Mapping[str, Any]], pending: deque[tuple[_Lane | None, _FrameWork]]
    ) -> tuple[bool, Exception | None]:
        """Take the next payload into a free lane (or, without parallel lanes, into none yet).

        Returns whether the source is done, and the error that ended it, if one did.
        """
        try:
            payload = next(source)
        except StopIteration:
            return True, None
        except Exception as error:  # raised once the frames already taken are done
            return True, error
        lane = self._free.pop() if self._free else None
        work = _FrameWork(payload)
        del payload
        if lane is not None:
            self._start(lane, work, finish=self._ordered is None)
        pending.append((lane, work))
        return False, None

    def _wait_for_lane(self, lane: _Lane | None, work: _FrameWork) -> None:
        """Wait for the frame's frame-independent nodes; their lane is free again after."""
        if lane is None:
            return
        if work.ran_inline:
            self._free.append(lane)
            if work.inline_error is not None:
                error, work.inline_error = work.inline_error, None
                raise error
            return
        try:
            self._wait(lane, work.payload.get("frame_index"))
        finally:
            if lane.thread is not None:  # not abandoned
                self._free.append(lane)

    def _run_ordered(self, work: _FrameWork) -> None:
        """The frame's ordered nodes, in the ordered lane, after those of the frames before it."""
        ordered = self._ordered
        if ordered is None:
            return
        if ordered.bounded_time or (ordered.thread is None and self._node_timeout_seconds is None):
            self._run_lane(ordered, work, finish=True)  # no limit to watch: no hand-off
            return
        self._start(ordered, work, finish=True)
        self._wait(ordered, work.payload.get("frame_index"))

    def _wait(self, lane: _Lane, frame_index: Any) -> None:
        """Wait for the lane's call; a node over the time limit fails the run and abandons the lane's thread."""
        assert lane.thread is not None
        try:
            lane.thread.result()
        except StepTimedOut as timed_out:
            node = cast(NodeSpec, timed_out.step)
            self._timed_out = NodeTimedOut(
                self.spec.id, node.id, node.plugin_ref, frame_index, timed_out.limit_seconds
            )
            self._abandon_thread(lane, node)
            raise self._timed_out from None

    def _settle(self, pending: deque[tuple[_Lane | None, _FrameWork]]) -> None:
        """Wait out the frames still in lanes when the caller stopped early; their results are dropped."""
        while pending:
            lane, work = pending.popleft()
            if lane is not None and work.ran_inline:
                self._free.append(lane)
                continue
            if lane is None or lane.thread is None:
                continue
            with contextlib.suppress(Exception):
                self._wait(lane, work.payload.get("frame_index"))
            if lane.thread is not None:
                self._free.append(lane)

    def _abandon_thread(self, lane: _Lane, node: NodeSpec) -> None:
        """Leave the hung node's instance to its thread: closing it under a live call is unsafe."""
        assert lane.thread is not None
        instance = lane.instances.pop(node.id, None)
        lane.thread.abandon(lambda: _close_quietly(instance, node.id, self.spec.id))
        lane.thread = None
        with self._timings_lock:
            self._timings[node.id].errors += 1
        logger.error(
            "%s; its thread is abandoned (%d abandoned in this process)", self._timed_out, abandoned_thread_count()
        )

    def _run_lane(self, lane: _Lane, work: _FrameWork, *, finish: bool) -> None:
        """Run the lane's nodes on the frame; with `finish`, also build the frame's result."""
        if not lane.opened:
            self._open(lane)
        frame_index = work.payload.get("frame_index")
        for node in lane.nodes:
            blocked_by = next((s.node for _, s in node.inputs if s.node in work.failed), None)
            if blocked_by is not None:
                work.failed.add(node.id)
                work.errors.append(_error(node, "ABORTED", f"skipped because node {blocked_by!r} failed"))
                continue
            inputs = {name: _read(source, work.payload, work.values) for name, source in node.inputs}
            try:
                outputs, sent = self._call(lane, node, inputs)
            except Exception as error:
                cause = str(error) if isinstance(error, _NotSendable) else _described(error)
                with self._timings_lock:
                    self._timings[node.id].errors += 1
                if node.on_error is ErrorPolicy.FAIL:
                    raise NodeFailed(self.spec.id, node.id, node.plugin_ref, frame_index, cause) from error
                work.failed.add(node.id)
                work.errors.append(_error(node, "INTERNAL", cause))
                continue
            for port in node.tool.outputs:
                work.values[SourceRef(node.id, port.name)] = outputs[port.name]
            work.sent.update(sent)
        if finish:
            work.result, bounds = self._result(work)
            if work.errors:
                work.result["errors"] = work.errors
            if self._max_result_bytes is not None:
                self._fit(work, bounds, self._max_result_bytes, frame_index)

    def _call(
        self, lane: _Lane, node: NodeSpec, inputs: dict[str, Any]
    ) -> tuple[Mapping[str, Any], dict[str, tuple[Any, int]]]:
        """The node's outputs, and those the pipeline sends (`_FrameWork.sent`) converted.

        Converting an output is its node's work, on its clock and in its time: one that cannot
        be converted fails the node (`_NotSendable`) before any node reads it, so under
        `on_error: skip` the nodes it feeds are skipped, as after a failed call.
        """
        if self._timed_out is not None:
            # Only an abandoned thread gets here, after its hung call returned: the run is over.
            raise RuntimeError(f"run of pipeline {self.spec.id!r} was stopped by a node time limit")
        started = time.perf_counter()
        # Watched by the time limit, unless its time is bounded (it may run in a lane's thread
        # all the same, when it takes long enough for frames in parallel).
        lane.running = None if node.tool.bounded_time else (node, started)
        try:
            outputs = _ending_nothing_but_the_node(lane.instances[node.id].process, inputs)
            if not isinstance(outputs, Mapping):
                raise TypeError(f"returned {type(outputs).__name__}, not a mapping of outputs")
            missing = [port.name for port in node.tool.outputs if port.name not in outputs]
            if missing:
                raise KeyError(f"returned no {', '.join(map(repr, missing))} output")
            # Watched even for a tool of bounded time: a value's to_json() is code of its own.
            lane.running = (node, time.perf_counter())
            return outputs, _ending_nothing_but_the_node(self._sendable, node, outputs)
        finally:
            lane.running = None
            elapsed = time.perf_counter() - started
            with self._timings_lock:
                timing = self._timings[node.id]
                timing.calls += 1
                timing.total_seconds += elapsed
            if self._node_observer is not None:
                self._node_observer(self.spec.id, node.id, node.plugin_ref, elapsed)

    def _sendable(self, node: NodeSpec, outputs: Mapping[str, Any]) -> dict[str, tuple[Any, int]]:
        """The node's outputs the pipeline sends, as JSON-like values with an upper bound of the
        bytes each takes as sent (a value's own to_json() is plugin code too)."""
        sent: dict[str, tuple[Any, int]] = {}
        for name, source in self._sent_by_node.get(node.id, ()):
            try:
                value, value_bound = to_json_like_sized(outputs[source.output])
            except Exception as error:  # RecursionError included: a value that holds itself
                raise _NotSendable(
                    f"output {source.output!r} is not JSON-like: {_described(error, typed=False)}"
                    if isinstance(error, NotJsonLike)
                    else f"converting output {source.output!r} failed: {_described(error)}"
                ) from error
            sent[name] = (value, entry_bound(name, value_bound))
        return sent

    def _result(self, work: _FrameWork) -> tuple[dict[str, Any], dict[str, int]]:
        """The frame's outputs as sent, with an upper bound of the bytes each takes; those of
        failed nodes are left out (the reason is in "errors")."""
        result: dict[str, Any] = {}
        bounds: dict[str, int] = {}
        for name, source in self.spec.outputs:
            if name in work.sent and source.node not in work.failed:
                result[name], bounds[name] = work.sent[name]
        return result, bounds

    def _output_failed(
        self, node: NodeSpec, cause: str, code: str, work: _FrameWork, result: dict[str, Any],
        bounds: dict[str, int], frame_index: Any,
    ) -> None:
        """A node's output cannot go out: the run fails, or under `on_error: skip` every output of
        the node is left out and the error reported in-band."""
        with self._timings_lock:
            self._timings[node.id].errors += 1
        if node.on_error is ErrorPolicy.FAIL:
            raise NodeFailed(self.spec.id, node.id, node.plugin_ref, frame_index, cause)
        work.failed.add(node.id)
        for name, source in self.spec.outputs:
            if source.node == node.id:
                result.pop(name, None)
                bounds.pop(name, None)
        work.errors.append(_error(node, code, cause))

    def _fit(self, work: _FrameWork, bounds: dict[str, int], limit: int, frame_index: Any) -> None:
        """A result over `limit` bytes could never be sent (nor a job's stored one watched). Most are
        told to fit by their bound; one that may not is measured, and then its largest output is
        its node's failure (under its `on_error` policy) until the rest fits. Errors reported
        in-band that take the most are cut short first, and fail the run if that is not enough."""
        result = work.result
        assert result is not None
        errors_bound = entry_bound("errors", to_json_like_sized(work.errors)[1]) if work.errors else 0
        if sum(bounds.values()) + errors_bound <= limit:
            return
        sources = dict(self.spec.outputs)
        errors_cut = False
        while (size := encoded_size(result)) > limit:
            sizes = {name: encoded_size({name: value}) for name, value in result.items()}
            name = max(sizes, key=lambda entry: sizes[entry])
            if name == "errors":
                if errors_cut:
                    node = self._nodes_by_id[work.errors[0]["node_id"]]
                    raise NodeFailed(self.spec.id, node.id, node.plugin_ref, frame_index,
                                     f"the frame's {len(work.errors)} node errors take {sizes[name]} bytes as sent, "
                                     f"over the {limit} bytes a frame's result may take")
                for error in work.errors:
                    error["message"] = error["message"][:_CUT_ERROR_MESSAGE_CHARS]
                errors_cut = True
                continue
            node = self._nodes_by_id[sources[name].node]
            cause = (f"output {sources[name].output!r} is {sizes[name]} bytes as sent (the frame's whole result "
                     f"{size}), over the {limit} bytes a frame's result may take (one message every gRPC client "
                     f"receives: 4 MiB by default, or the server's --max-message-bytes if lower, less 1 KiB)")
            self._output_failed(node, cause, "RESOURCE_EXHAUSTED", work, result, bounds, frame_index)
            if work.errors:
                result["errors"] = work.errors


class _NotSendable(Exception):
    """An output of the node's cannot be converted to what a frame's result holds."""


def _always() -> bool:
    return True


def _read(source: SourceRef, payload: Mapping[str, Any], values: Mapping[SourceRef, Any]) -> Any:
    # Payload keys are read only when a node asks, so a lazy payload encodes image_bytes on demand.
    if source.is_frame:
        return payload[FRAME_FIELDS[source.output]]
    return values[source]


def _close_quietly(instance: ToolInstance | None, node_id: str, pipeline_id: str) -> None:
    if instance is None:
        return
    try:
        _ending_nothing_but_the_node(instance.close)
    except Exception:
        logger.exception("closing node %r of pipeline %r failed", node_id, pipeline_id)


class _PluginExit(Exception):
    """A plugin raised SystemExit or KeyboardInterrupt (a library's `sys.exit()`, argparse):
    escaping, it would end the thread it ran in, leaving a call without its status, or a job
    worker gone; it fails its node instead, as any other error does."""


def _ending_nothing_but_the_node(step: Callable[..., T], *args: Any) -> T:
    try:
        return step(*args)
    except (SystemExit, KeyboardInterrupt) as error:
        raise _PluginExit(_described(error)) from error


def _described(error: BaseException, typed: bool = True) -> str:
    """A plugin's exception as its failure's message says it, cut to `MAX_ERROR_MESSAGE_CHARS`: the
    message goes out with the frame's result or in the call's status, and its text can be any size."""
    if isinstance(error, _PluginExit):
        return str(error)  # described as what the plugin raised
    try:
        text = str(error)
    except Exception as failure:  # an exception's class is plugin code too
        text = f"(its message could not be read: {type(failure).__name__})"
    if not text.isascii():  # a lone surrogate (from bytes decoded with surrogateescape) cannot be sent
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = f"{text[:MAX_ERROR_MESSAGE_CHARS]}… ({len(text)} characters in all)"
    return f"{type(error).__name__}: {text}" if typed else text


def _error(node: NodeSpec, code: str, message: str) -> dict[str, Any]:
    return {"node_id": node.id, "plugin": node.plugin_ref, "code": code, "message": message}
