"""Job parts <-> JSON text, the one format both stores persist (SQLite columns, Redis fields).

Only the parts that are structured are encoded here; scalar columns stay scalar in each
store so they can be indexed and compared there.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from videodag_service.errors import FieldViolation, Resource
from videodag_service.jobs.model import JobError, JobSummary, NodeTimingRecord
from videodag_service.video import SamplingOptions, VideoInfo


def _dumps(value: Any) -> str:
    # allow_nan=False: results are JSON-like by the engine's contract; a NaN here is a bug.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sampling_to_text(sampling: SamplingOptions) -> str:
    return _dumps(asdict(sampling))


def sampling_from_text(text: str) -> SamplingOptions:
    return SamplingOptions(**json.loads(text))


def video_info_to_text(info: VideoInfo | None) -> str | None:
    return None if info is None else _dumps(asdict(info))


def video_info_from_text(text: str | None) -> VideoInfo | None:
    return VideoInfo(**json.loads(text)) if text else None


def summary_to_text(summary: JobSummary | None) -> str | None:
    return None if summary is None else _dumps(asdict(summary))


def summary_from_text(text: str | None) -> JobSummary | None:
    if not text:
        return None
    values = json.loads(text)
    timings = tuple(NodeTimingRecord(**timing) for timing in values.pop("node_timings"))
    return JobSummary(**values, node_timings=timings)


def error_to_text(error: JobError | None) -> str | None:
    return None if error is None else _dumps(asdict(error))


def error_from_text(text: str | None) -> JobError | None:
    if not text:
        return None
    values = json.loads(text)
    resource = values.pop("resource")
    violations = tuple(FieldViolation(**violation) for violation in values.pop("field_violations"))
    return JobError(
        **values,
        field_violations=violations,
        resource=Resource(**resource) if resource else None,
    )


def result_to_text(result: dict[str, Any]) -> str:
    return _dumps(result)


def result_from_text(text: str | bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text)
    return result
