"""`DagPipelineService`: the named pipelines a server runs, and runs of them.

The video layer opens one run per video (`open_run`), so trackers see one video's
frames only; `run_pipeline` stays for single-frame callers and opens a run of one frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from videodag_service.cores import usable_cores
from videodag_service.dag.executor import PipelineRun
from videodag_service.dag.loader import load_pipeline_folder
from videodag_service.dag.node_timings import NodeObserver
from videodag_service.dag.registry import PluginRegistry, default_registry
from videodag_service.dag.spec import PipelineSpec, requested_id_problem
from videodag_service.errors import ErrorDetails, FieldViolation, InvalidPipelineId, PipelineNotFound

BUILTIN_PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipelines"
# Each frame worker holds instances of its own (a detector: about 50 MB); past a few, a
# run gains little, and concurrent runs share the cores anyway.
MAX_DEFAULT_FRAME_WORKERS = 8


class DagPipelineService:
    """Validated pipelines by id; opens runs of them.

    `node_timeout_seconds` (None: no limit) caps one node call on one frame in every run
    opened from now on; see `PipelineRun` for what a call over it costs. `frame_workers` is
    how many frames the frame-independent nodes of a run may work on at once; None: one per
    core this process may use (`cores.usable_cores`), at most `MAX_DEFAULT_FRAME_WORKERS`.
    `max_result_bytes` (None: no limit) is the most a frame's result may take as sent
    (`json_like.encoded_size`): a server sets it from its message limit.
    """

    def __init__(
        self,
        pipelines: Mapping[str, PipelineSpec],
        node_observer: NodeObserver | None = None,
        node_timeout_seconds: float | None = None,
        frame_workers: int | None = None,
    ) -> None:
        self._pipelines = dict(sorted(pipelines.items()))
        self.node_observer = node_observer
        self.node_timeout_seconds = node_timeout_seconds
        self.frame_workers = frame_workers or min(usable_cores(), MAX_DEFAULT_FRAME_WORKERS)
        self.max_result_bytes: int | None = None

    @classmethod
    def from_folder(cls, folder: Path = BUILTIN_PIPELINE_DIR, registry: PluginRegistry | None = None
                    ) -> DagPipelineService:
        """Load and validate every pipeline in `folder` (the built-in ones by default)."""
        return cls(load_pipeline_folder(folder, registry or default_registry()))

    def pipeline_ids(self) -> list[str]:
        return list(self._pipelines)

    def pipelines(self) -> list[PipelineSpec]:
        return list(self._pipelines.values())

    def get_pipeline(self, pipeline_id: str) -> PipelineSpec:
        """The pipeline with this id; InvalidPipelineId for a malformed id, PipelineNotFound for an unknown one."""
        if not pipeline_id:
            raise PipelineNotFound(pipeline_id, self.pipeline_ids())
        problem = requested_id_problem(pipeline_id)
        if problem is not None:
            raise InvalidPipelineId(problem, ErrorDetails(field_violations=(FieldViolation("pipeline_id", problem),)))
        spec = self._pipelines.get(pipeline_id)
        if spec is None:
            raise PipelineNotFound(pipeline_id, self.pipeline_ids())
        return spec

    @contextmanager
    def open_run(self, pipeline_id: str, frame_workers: int | None = None) -> Iterator[PipelineRun]:
        """A run of the pipeline for one video, closed when the block exits however it exits.

        `frame_workers` overrides the service's for this run (1 for a single frame).
        """
        workers = frame_workers or self.frame_workers
        spec = self.get_pipeline(pipeline_id)
        run = PipelineRun(spec, self.node_observer, self.node_timeout_seconds, workers, self.max_result_bytes)
        try:
            yield run
        finally:
            run.close()

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run the pipeline on one frame with fresh node state."""
        with self.open_run(pipeline_id, frame_workers=1) as run:
            return run.process(payload)

