"""Fake DAG services for the video layer's tests.

`RecordingDagService` offers only `run_pipeline` (the minimum protocol); `RunningDagService`
offers `open_run` (per-video runs) and counts how runs are opened and closed. Both compute
a real, checkable result from the pixels they receive, and can be told to fail, to be slow,
or to read the lazily encoded `image_bytes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PIPELINE = "demo_v1"


@dataclass(frozen=True)
class SeenFrame:
    """What a fake saw for one frame, for assertions."""

    pipeline_id: str
    frame_index: int
    timestamp: float
    shape: tuple[int, ...]


def frame_summary(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A result that depends on the pixels, so tests can recompute it from an independent decode."""
    image: np.ndarray = payload["image"]
    return {
        "frame_index": payload["frame_index"],
        "timestamp": payload["timestamp"],
        "mean": float(image.mean()),
        "shape": list(image.shape),
    }


class RecordingDagService:
    """A stateless DAG service with `run_pipeline` only.

    failures: frame index -> exception raised when that frame arrives.
    delay_seconds: frame index -> seconds to sleep before answering (simulated latency).
    read_image_bytes: also read payload["image_bytes"] and report its length.
    """

    def __init__(
        self,
        pipelines: tuple[str, ...] = (DEFAULT_PIPELINE,),
        *,
        failures: Mapping[int, BaseException] | None = None,
        delay_seconds: Callable[[int], float] | None = None,
        read_image_bytes: bool = False,
    ) -> None:
        self.pipelines = pipelines
        self.failures = dict(failures or {})
        self.delay_seconds = delay_seconds
        self.read_image_bytes = read_image_bytes
        self.seen: list[SeenFrame] = []

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if pipeline_id not in self.pipelines:
            raise FileNotFoundError(f"pipeline {pipeline_id!r} not found")
        frame_index = payload["frame_index"]
        self.seen.append(SeenFrame(pipeline_id, frame_index, payload["timestamp"], payload["image"].shape))
        if frame_index in self.failures:
            raise self.failures[frame_index]
        if self.delay_seconds is not None:
            time.sleep(self.delay_seconds(frame_index))
        result = frame_summary(payload)
        if self.read_image_bytes:
            result["image_bytes_length"] = len(payload["image_bytes"])
        return result


class MutatingDagService:
    """A badly behaved service: it reuses one result object and mutates it after returning it,
    and tries to scribble over the payload's image once it has summarised it."""

    def __init__(self) -> None:
        self._result: dict[str, Any] = {"history": []}
        self.scribbles_refused = 0

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        summary = frame_summary(payload)
        self._result["history"].append(summary["frame_index"])
        self._result.update(summary)
        try:
            payload["image"][:] = 0
        except ValueError:  # numpy: "assignment destination is read-only"
            self.scribbles_refused += 1
        return self._result


@dataclass(frozen=True)
class FakeNodeTiming:
    node_id: str
    plugin: str
    calls: int
    total_seconds: float
    errors: int = 0


@dataclass
class RunLedger:
    """How the runs of a `RunningDagService` were opened and closed."""

    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    exit_errors: list[type[BaseException] | None] = field(default_factory=list)
    frames_per_run: list[list[int]] = field(default_factory=list)


class FakeRun:
    """One run: keeps per-run state (the frames it saw) like a tracker would."""

    def __init__(self, pipeline_id: str, failures: Mapping[int, BaseException]) -> None:
        self.pipeline_id = pipeline_id
        self.frames: list[int] = []
        self._failures = failures
        self._seconds = 0.0

    def process(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        frame_index = payload["frame_index"]
        if frame_index in self._failures:
            raise self._failures[frame_index]
        self.frames.append(frame_index)
        result = frame_summary(payload)
        result["frames_seen_in_run"] = len(self.frames)
        self._seconds += time.perf_counter() - started
        return result

    def node_timings(self) -> list[FakeNodeTiming]:
        return [FakeNodeTiming("summary", "fake.summary", len(self.frames), self._seconds)]


class RunningDagService:
    """A DAG service with per-video runs (`open_run`), recording every open and close."""

    def __init__(
        self,
        pipelines: tuple[str, ...] = (DEFAULT_PIPELINE,),
        *,
        failures: Mapping[int, BaseException] | None = None,
    ) -> None:
        self.pipelines = pipelines
        self.failures = dict(failures or {})
        self.ledger = RunLedger()

    @contextmanager
    def open_run(self, pipeline_id: str) -> Iterator[FakeRun]:
        if pipeline_id not in self.pipelines:
            raise FileNotFoundError(f"pipeline {pipeline_id!r} not found")
        run = FakeRun(pipeline_id, self.failures)
        self.ledger.opened.append(pipeline_id)
        exit_error: type[BaseException] | None = None
        try:
            yield run
        except BaseException as error:
            exit_error = type(error)
            raise
        finally:
            self.ledger.closed.append(pipeline_id)
            self.ledger.exit_errors.append(exit_error)
            self.ledger.frames_per_run.append(run.frames)

    def run_pipeline(self, pipeline_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Present to prove the video layer prefers `open_run` when both exist."""
        raise AssertionError("run_pipeline must not be used when open_run exists")
