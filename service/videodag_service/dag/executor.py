"""Run a pipeline over the frames of one video: `PipelineRun`.

A run opens its own instances of the nodes' tools, so stateful nodes (trackers) live for
exactly one video and two runs never share state. `close()` closes every instance
once, whatever happened before. Results leave the run JSON-like; anything else is a
failure of the node that produced it (`frame_result`).

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

This module decides which frame goes into which lane, in which thread, and watches the time
limit; apart from it are what a lane does with a frame (`lanes`), how a frame's result is put
together (`frame_result`), how plugin code is called (`plugin_calls`) and the timings every
part counts into (`node_timings`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from videodag_service.dag.frame_result import FrameResults, FrameWork
from videodag_service.dag.lanes import Lane, frame_independent_nodes
from videodag_service.dag.node_timings import NodeObserver, NodeTiming, RunTimings
from videodag_service.dag.plugin import ToolInstance
from videodag_service.dag.plugin_calls import close_quietly
from videodag_service.dag.spec import NodeSpec, PipelineSpec
from videodag_service.dag.time_limit import StepLimitedThread, StepTimedOut, abandoned_thread_count
from videodag_service.errors import NodeTimedOut
from videodag_service.wording import plain_number

logger = logging.getLogger(__name__)

NODE_THREAD_NAME = "videodag-nodes"

PARALLEL_MIN_SECONDS = 0.001
"""A second frame goes into the parallel lanes only while the frame-independent nodes take at
least this long a frame (their average over the run so far). Below it, a second frame in
flight saves less than its hand-offs cost: end to end on 2 cores, `frame_stats_v1` (0.05 ms
a frame) went 3-5% faster with one frame at a time, while a detector (20 ms) goes 8% faster
with two."""


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
        self._node_timeout_seconds = node_timeout_seconds
        self._timed_out: NodeTimedOut | None = None
        self._timings = RunTimings(spec, node_observer)
        results = FrameResults(spec, self._timings, max_result_bytes)
        self._closed = False
        independent = frame_independent_nodes(spec) if frame_workers > 1 else ()
        independent_ids = {node.id for node in independent}
        self._independent_timings = self._timings.of(independent)
        ordered = tuple(node for node in spec.nodes if node.id not in independent_ids)

        def lane_of(nodes: tuple[NodeSpec, ...]) -> Lane:
            return Lane(nodes, spec.id, self._timings, results, self._given_up)

        self._parallel = [lane_of(independent) for _ in range(frame_workers if independent else 0)]
        self._ordered = lane_of(ordered) if ordered else None
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
        self._free: deque[Lane] = deque(reversed(self._parallel))

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
        pending: deque[tuple[Lane | None, FrameWork]] = deque()
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
        return self._timings.of(self.spec.nodes)

    def close(self) -> None:
        """Close every opened instance exactly once; a failing close is logged, not raised."""
        if self._closed:
            return
        self._closed = True
        for lane in self._lanes():
            self._close_within_limit(lane)
            lane.instances.clear()

    def _close_within_limit(self, lane: Lane) -> None:
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
            self._abandoned(node, f"closing node {node.id!r} ({node.plugin_ref}) of pipeline {self.spec.id!r} took "
                                  f"more than the node time limit ({plain_number(timed_out.limit_seconds)} s)")
        else:
            closer.close()

    def _close_in_order(
        self, closing: list[tuple[NodeSpec, float] | None], instances: list[tuple[NodeSpec, ToolInstance]]
    ) -> None:
        for node, instance in instances:
            closing[0] = (node, time.perf_counter())
            try:
                close_quietly(instance, node.id, self.spec.id)
            finally:
                closing[0] = None

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _lanes(self) -> list[Lane]:
        return [*self._parallel, *([self._ordered] if self._ordered is not None else [])]

    def _open_within_limit(self, lane: Lane) -> None:
        """`Lane.open` in the lane's thread, each node's open watched by the node time limit, unless
        every tool of the lane promises a bounded time: a tool whose open never returns (a
        model fetched from a server that does not answer) would hold the run, and its slot, for good."""
        if self._node_timeout_seconds is None or lane.bounded_time:
            lane.open()
            return
        lane.thread = StepLimitedThread(self._node_timeout_seconds, lane.in_progress, NODE_THREAD_NAME)
        try:
            lane.thread.call(Lane.open, lane)
        except StepTimedOut as timed_out:
            node = cast(NodeSpec, timed_out.step)
            self._timed_out = NodeTimedOut(
                self.spec.id, node.id, node.plugin_ref, None, timed_out.limit_seconds, opening=True
            )
            # The hung open closes what it opens if it ever returns (`Lane.open`); `close` the others.
            lane.thread.abandon(lambda: None)
            lane.thread = None
            self._abandoned(node, self._timed_out)
            raise self._timed_out from None

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(f"run of pipeline {self.spec.id!r} is closed")
        if self._timed_out is not None:
            raise self._timed_out

    def _given_up(self) -> bool:
        """Whether a node ran over the time limit: the run is over, even for a call returning late."""
        return self._timed_out is not None

    def _start(self, lane: Lane, work: FrameWork, *, finish: bool) -> None:
        """Start `lane`'s nodes on the frame in the lane's thread (started on first use), or run
        them here and now when their time is bounded and frames go one at a time (a free
        lane's thread, if it has one, is idle)."""
        if lane.bounded_time and not self._measured_slow():
            try:
                lane.run(work, finish=finish)
            except Exception as error:  # raised when the frame's turn comes (`_wait_for_lane`)
                work.inline_error = error
            work.ran_inline = True
            return
        if lane.thread is None:
            lane.thread = StepLimitedThread(self._node_timeout_seconds, lane.in_progress, NODE_THREAD_NAME)
        lane.thread.submit(functools.partial(lane.run, finish=finish), work)

    def _should_take(
        self, pending: deque[tuple[Lane | None, FrameWork]], handed_out: bool, ready: Callable[[], bool]
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
        average = self._timings.frame_seconds(self._independent_timings)
        return average is None or average >= PARALLEL_MIN_SECONDS

    def _measured_slow(self) -> bool:
        """Whether the frame-independent nodes have run and proved slow enough for frames in parallel."""
        average = self._timings.frame_seconds(self._independent_timings)
        return average is not None and average >= PARALLEL_MIN_SECONDS

    def _take(
        self, source: Iterator[Mapping[str, Any]], pending: deque[tuple[Lane | None, FrameWork]]
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
        work = FrameWork(payload)
        del payload
        if lane is not None:
            self._start(lane, work, finish=self._ordered is None)
        pending.append((lane, work))
        return False, None

    def _wait_for_lane(self, lane: Lane | None, work: FrameWork) -> None:
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

    def _run_ordered(self, work: FrameWork) -> None:
        """The frame's ordered nodes, in the ordered lane, after those of the frames before it."""
        ordered = self._ordered
        if ordered is None:
            return
        if ordered.bounded_time or (ordered.thread is None and self._node_timeout_seconds is None):
            ordered.run(work, finish=True)  # no limit to watch: no hand-off
            return
        self._start(ordered, work, finish=True)
        self._wait(ordered, work.payload.get("frame_index"))

    def _wait(self, lane: Lane, frame_index: Any) -> None:
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

    def _settle(self, pending: deque[tuple[Lane | None, FrameWork]]) -> None:
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

    def _abandon_thread(self, lane: Lane, node: NodeSpec) -> None:
        """Leave the hung node's instance to its thread: closing it under a live call is unsafe."""
        assert lane.thread is not None
        instance = lane.instances.pop(node.id, None)
        lane.thread.abandon(lambda: close_quietly(instance, node.id, self.spec.id))
        lane.thread = None
        self._abandoned(node, self._timed_out)

    def _abandoned(self, node: NodeSpec, failure: object) -> None:
        """A call of the node ran over the time limit and its thread was left to it: an error of
        the node's, and a line in the log, with the count of threads abandoned so far."""
        self._timings.count_error(node)
        logger.error("%s; its thread is abandoned (%d abandoned in this process)", failure, abandoned_thread_count())


def _always() -> bool:
    return True
