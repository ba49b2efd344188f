"""Job parts <-> JSON text, the one format both stores persist (SQLite columns, Redis fields).

Only the parts that are structured are encoded here; scalar columns stay scalar in each
store so they can be indexed and compared there. A whole job is read back from either
store's fields by `job_from_mapping`.

Records outlive the release that wrote them, and releases overlap: replicas and RQ workers of
two releases share a store through a rolling upgrade, and a rollback reads what the newer one
wrote. So a reader takes the fields it knows and leaves the others (a summary's or a video's
field added later is information this release has no use for): read strictly, every job a
newer release finished would fail INTERNAL, ListJobs with it. Sampling options are the
exception: one this release does not know, set to anything but its unset value, would change
what the run does, and running without it would be wrong; such a job is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, Protocol

from videodag_service.errors import FieldViolation, Resource
from videodag_service.jobs.model import Job, JobError, JobState, JobSummary, NodeTimingRecord, StoredVideo
from videodag_service.video import SamplingOptions, VideoInfo


class _Dataclass(Protocol):
    """Any dataclass (`dataclasses.fields` takes one, or its class)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


def _dumps(value: Any) -> str:
    # allow_nan=False: results are JSON-like by the engine's contract; a NaN here is a bug.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sampling_to_text(sampling: SamplingOptions) -> str:
    return _dumps(asdict(sampling))


def _known(record_type: type[_Dataclass], values: dict[str, Any]) -> dict[str, Any]:
    """The values of `record_type`'s fields: those a later release added are left out."""
    names = {field.name for field in fields(record_type)}
    return {name: value for name, value in values.items() if name in names}


def sampling_from_text(text: str) -> SamplingOptions:
    return SamplingOptions(**_known(SamplingOptions, json.loads(text)))


def unknown_sampling_from_text(text: str) -> tuple[tuple[str, Any], ...]:
    """Sampling options of a later release, set: a run without them would not be the one asked for."""
    values = json.loads(text)
    known = _known(SamplingOptions, values)
    unknown = ((name, value) for name, value in values.items() if name not in known and value)  # set: not 0, "", []
    return tuple(sorted(unknown))


def video_info_to_text(info: VideoInfo | None) -> str | None:
    return None if info is None else _dumps(asdict(info))


def video_info_from_text(text: str | None) -> VideoInfo | None:
    return VideoInfo(**_known(VideoInfo, json.loads(text))) if text else None


def summary_to_text(summary: JobSummary | None) -> str | None:
    return None if summary is None else _dumps(asdict(summary))


def summary_from_text(text: str | None) -> JobSummary | None:
    if not text:
        return None
    values = json.loads(text)
    timings = tuple(NodeTimingRecord(**_known(NodeTimingRecord, timing)) for timing in values.pop("node_timings"))
    return JobSummary(**_known(JobSummary, values), node_timings=timings)


def error_to_text(error: JobError | None) -> str | None:
    return None if error is None else _dumps(asdict(error))


def error_from_text(text: str | None) -> JobError | None:
    if not text:
        return None
    values = json.loads(text)
    resource = values.pop("resource")
    violations = tuple(
        FieldViolation(**_known(FieldViolation, violation)) for violation in values.pop("field_violations")
    )
    return JobError(
        **_known(JobError, values),
        field_violations=violations,
        resource=Resource(**_known(Resource, resource)) if resource else None,
    )


def result_to_text(result: dict[str, Any]) -> str:
    return _dumps(result)


def result_from_text(text: str | bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text)
    return result


def job_from_mapping(values: Mapping[str, Any]) -> Job:
    """A job from a store's fields by their names: a SQLite row, or a Redis hash whose values
    are all text and which leaves out the fields it has no value for."""
    return Job(
        id=values["id"],
        state=JobState(values["state"]),
        pipeline_id=values["pipeline_id"],
        sampling=sampling_from_text(values["sampling"]),
        unknown_sampling=unknown_sampling_from_text(values["sampling"]),
        video=StoredVideo(values["video_ref"], int(values["video_size_bytes"]), values["video_sha256"]),
        created_at=float(values["created_at"]),
        file_name=values.get("file_name", ""),
        idempotency_key=values.get("idempotency_key") or None,
        attempt=int(values["attempt"]),
        started_at=_optional_float(values.get("started_at")),
        finished_at=_optional_float(values.get("finished_at")),
        expire_at=_optional_float(values.get("expire_at")),
        frames_done=int(values.get("frames_done", 0)),
        frames_total=int(values.get("frames_total", 0)),
        video_info=video_info_from_text(values.get("video_info")),
        summary=summary_from_text(values.get("summary")),
        error=error_from_text(values.get("error")),
        revision=int(values.get("revision", 0)),
    )


def _optional_float(value: float | str | None) -> float | None:
    return None if value is None or value == "" else float(value)
