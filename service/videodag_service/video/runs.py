"""What the video layer needs from a DAG service: structural protocols, no import of the engine.

Two shapes are accepted:

* `SupportsRunPipeline`, the minimum: `run_pipeline(pipeline_id, payload) -> Mapping`, one
  independent call per frame (stateless, no timings).
* `SupportsRuns`, preferred when present: `open_run(pipeline_id)` returns a context manager
  around a `PipelineRun` that keeps per-video state (trackers) across frames. The video layer
  opens exactly one run per video, calls `process` once per sampled frame in frame order
  from a single thread, reads `node_timings()` after the last frame, and always exits the
  context manager: on success, on any error, and when the consumer closes the event stream
  early (client cancel). Exceptions raised by `open_run`, `process` or the exit propagate
  unchanged. A run may also offer `process_frames(payloads)`, yielding `(payload, result)`
  in order while it works on several frames at once; the video layer then uses it instead
  of `process` (see `frame_results`) and closes it before the run.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class NodeTimingLike(Protocol):
    """Time spent in one pipeline node over a run (mirrors `videodag.v1.NodeTiming`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def plugin(self) -> str:
        """The node's plugin reference, "plugin.tool"."""
        ...

    @property
    def calls(self) -> int: ...

    @property
    def total_seconds(self) -> float: ...

    @property
    def errors(self) -> int:
        """Frames the node failed on while its policy let the frame go on."""
        ...


@runtime_checkable
class PipelineRun(Protocol):
    """One pipeline opened for one video; not shared between videos or threads."""

    def process(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run every node on one frame and return the frame's JSON-like result."""
        ...

    def node_timings(self) -> Sequence[NodeTimingLike]:
        """Timings so far, in pipeline order; read once after the last frame."""
        ...


@runtime_checkable
class SupportsRunPipeline(Protocol):
    """The minimum a DAG service offers: one stateless call per frame."""

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> Mapping[str, Any]: ...


@runtime_checkable
class SupportsRuns(Protocol):
    """A DAG service with per-video state: one run per video, closed on every path."""

    def open_run(self, pipeline_id: str) -> AbstractContextManager[PipelineRun]: ...


class _PerFrameRun:
    """Adapts `run_pipeline` to the run protocol for services without per-run state."""

    def __init__(self, dag_service: SupportsRunPipeline, pipeline_id: str) -> None:
        self._dag_service = dag_service
        self._pipeline_id = pipeline_id

    def process(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._dag_service.run_pipeline(self._pipeline_id, payload)

    def node_timings(self) -> Sequence[NodeTimingLike]:
        return ()


def frame_results(
    run: PipelineRun, payloads: Iterator[Mapping[str, Any]], *, overlap: bool, ready: Callable[[], bool] | None = None
) -> Generator[tuple[Mapping[str, Any], Mapping[str, Any]], None, None]:
    """`(payload, result)` per payload in order; through the run's `process_frames` when it has
    one and `overlap` is allowed, else one `process` call per frame. `ready` says whether the
    next payload is there already (see `PipelineRun.process_frames`)."""
    process_frames = getattr(run, "process_frames", None) if overlap else None
    if callable(process_frames):
        yield from process_frames(payloads, ready)
        return
    for payload in payloads:
        result = run.process(payload)
        yield payload, result
        del payload, result


def open_pipeline_run(
    dag_service: SupportsRuns | SupportsRunPipeline, pipeline_id: str
) -> AbstractContextManager[PipelineRun]:
    """Open a run on whichever protocol the service offers, preferring `open_run`."""
    if isinstance(dag_service, SupportsRuns):
        return dag_service.open_run(pipeline_id)
    if isinstance(dag_service, SupportsRunPipeline):
        return _per_frame_run(dag_service, pipeline_id)
    raise TypeError(
        f"{type(dag_service).__name__} has neither open_run(pipeline_id) "
        "nor run_pipeline(pipeline_id, payload)"
    )


@contextmanager
def _per_frame_run(dag_service: SupportsRunPipeline, pipeline_id: str) -> Iterator[PipelineRun]:
    yield _PerFrameRun(dag_service, pipeline_id)
