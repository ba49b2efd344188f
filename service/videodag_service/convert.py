"""Protobuf <-> domain values, and domain errors -> `google.rpc.Status`.

With the servicer, this is the only module that imports generated code; everything
below it works on plain Python values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from videodag.v1 import pipeline_pb2, run_pb2, video_pipeline_service_pb2
from videodag_service.dag import ErrorPolicy, PipelineSpec
from videodag_service.dag.spec import requested_id_problem
from videodag_service.errors import (
    ERROR_DOMAIN,
    MAX_DETAIL_BYTES,
    FieldViolation,
    InvalidOptions,
    InvalidPipelineId,
    VideodagError,
)
from videodag_service.video import NodeTimingLike, SamplingOptions, StoredUpload, VideoInfo
from videodag_service.video.upload import declared_sha256_violation, declared_size_violation, file_name_violation

_POLICIES = {
    ErrorPolicy.FAIL: pipeline_pb2.NODE_ERROR_POLICY_FAIL,
    ErrorPolicy.SKIP: pipeline_pb2.NODE_ERROR_POLICY_SKIP,
}


# google.protobuf.Duration's own range (its definition): about 10,000 years either way.
_MAX_DURATION_SECONDS = 315_576_000_000
_MAX_DURATION_NANOS = _MAX_DURATION_SECONDS * 10**9 + 999_999_999


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration within its definition's range: a float near the end of it (a job's echoed
    `end_offset` of 10,000 years) rounds past it, which clients refuse to print or parse."""
    message = duration_pb2.Duration()
    message.FromNanoseconds(max(-_MAX_DURATION_NANOS, min(_MAX_DURATION_NANOS, round(seconds * 1e9))))
    return message


# Where each sampling option lives in a RunConfig, for BadRequest field violations.
_OPTION_FIELDS = {
    "frame_stride": "options.frame_stride",
    "max_frames": "options.max_frames",
    "start_seconds": "options.start_offset",
    "end_seconds": "options.end_offset",
}
# RunConfig fields named bare by checks that know nothing of requests (the upload's, the pipelines').
_CONFIG_FIELDS = frozenset({"pipeline_id", "file_name", "declared_size_bytes", "sha256"})
# Where the RunConfig sits in each upload request: UploadAndRunRequest, SubmitJobRequest.
RUN_CONFIG_PATH = "config."
JOB_RUN_CONFIG_PATH = "config.run_config."


def checked_run_config(config: run_pb2.RunConfig, *, decodes_during_upload: bool = True) -> SamplingOptions:
    """The config's sampling options, once every field of the config is checked: InvalidOptions
    names each bad field at once (its path in the RunConfig), so a client fixes them in one go.
    A malformed pipeline id is named with the other bad fields; alone, it is left to the
    pipelines (INVALID_PIPELINE_ID), as is an unknown one (NOT_FOUND).
    `decodes_during_upload` False for a call that ignores that option (SubmitJob stores first)."""
    options = config.options
    violations: list[FieldViolation] = []
    start = _offset_seconds(options, "start_offset", violations)
    end = _offset_seconds(options, "end_offset", violations)
    sampling = SamplingOptions()
    try:
        sampling = SamplingOptions(options.frame_stride, options.max_frames, start, end)
    except InvalidOptions as error:
        violations += [FieldViolation(_OPTION_FIELDS.get(v.field, v.field), v.description)
                       for v in error.details.field_violations]
    violations += [violation for violation in (file_name_violation(config.file_name),
                                                declared_size_violation(config.declared_size_bytes),
                                                declared_sha256_violation(config.sha256)) if violation]
    if decodes_during_upload and config.decode_during_upload and config.declared_size_bytes == 0:
        violations.append(FieldViolation(
            "declared_size_bytes", "required (the exact size of the video in bytes) when decode_during_upload is set"
        ))
    if violations:
        raise InvalidOptions([*pipeline_id_violations(config.pipeline_id), *violations])
    return sampling


def pipeline_id_violations(pipeline_id: str) -> list[FieldViolation]:
    """A malformed id's violation, to name with a config's other bad fields (alone, the
    pipelines refuse it as INVALID_PIPELINE_ID); none for a name or an empty id."""
    problem = requested_id_problem(pipeline_id)
    return [] if problem is None else [FieldViolation("pipeline_id", problem)]




def _offset_seconds(
    options: run_pb2.RunOptions, name: Literal["start_offset", "end_offset"], violations: list[FieldViolation]
) -> float | None:
    """An offset in seconds, None when unset; a Duration its definition forbids (nanos out of
    range or of the other sign, seconds beyond 10,000 years) is a violation, not a guess."""
    if not options.HasField(name):
        return None
    offset: duration_pb2.Duration = getattr(options, name)
    seconds, nanos = offset.seconds, offset.nanos
    if (abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) > 999_999_999
            or (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0)):
        violations.append(FieldViolation(
            f"options.{name}", f"is not a valid Duration (seconds {seconds}, nanos {nanos}): nanos must be within "
            "±999,999,999 with the sign of seconds, seconds within ±315,576,000,000"
        ))
        return None
    return seconds + nanos / 1e9


def located_in_request(error: Exception, config_path: str) -> Exception:
    """`error` with the RunConfig's fields named by their path in the request (`config_path`
    is where the call's RunConfig sits), so a client in any language finds the field its
    BadRequest names. Fields named from the request's root already are left as they are."""
    if not isinstance(error, InvalidOptions | InvalidPipelineId):
        return error
    violations = error.details.field_violations
    if not any(_in_run_config(v.field) for v in violations):
        return error
    located = [FieldViolation(config_path + v.field if _in_run_config(v.field) else v.field, v.description)
               for v in violations]
    if isinstance(error, InvalidPipelineId):
        return InvalidPipelineId(error.message, replace(error.details, field_violations=tuple(located)))
    return InvalidOptions(located)


def _in_run_config(field: str) -> bool:
    return field in _CONFIG_FIELDS or field.startswith("options.")


def upload_received_event(upload: StoredUpload) -> video_pipeline_service_pb2.UploadAndRunResponse:
    return video_pipeline_service_pb2.UploadAndRunResponse(
        upload_received=run_pb2.UploadReceived(size_bytes=upload.size_bytes, sha256=upload.sha256)
    )


def video_info_event(info: VideoInfo) -> video_pipeline_service_pb2.UploadAndRunResponse:
    return video_pipeline_service_pb2.UploadAndRunResponse(
        video_info=run_pb2.VideoInfo(
            fps=info.fps,
            frame_count=info.frame_count,
            width=info.width,
            height=info.height,
            duration=duration(info.duration_seconds),
            codec=info.codec,
            size_bytes=info.size_bytes,
        )
    )


def frame_result(
    frame_index: int, timestamp_seconds: float, result: Mapping[str, Any]
) -> run_pb2.FrameResult:
    """A FrameResult; in-band node failures ("errors") move to the typed `node_errors` field."""
    outputs = {key: value for key, value in result.items() if key != "errors"}
    message = run_pb2.FrameResult(frame_index=frame_index, timestamp=duration(timestamp_seconds))
    message.result.update(outputs)
    for error in result.get("errors", ()):
        message.node_errors.append(
            run_pb2.NodeError(
                node_id=error["node_id"],
                plugin=error["plugin"],
                status=status_pb2.Status(code=code_pb2.Code.Value(error["code"]), message=error["message"]),
            )
        )
    return message


def frame_event(
    frame_index: int, timestamp_seconds: float, result: Mapping[str, Any]
) -> video_pipeline_service_pb2.UploadAndRunResponse:
    frame = frame_result(frame_index, timestamp_seconds, result)
    return video_pipeline_service_pb2.UploadAndRunResponse(frame=frame)


def run_summary(
    pipeline_id: str,
    pipeline_version: str,
    frames_processed: int,
    frames_with_errors: int,
    wall_seconds: float,
    decode_seconds: float,
    timings: Iterable[NodeTimingLike],
    ended_early: bool = False,
    frames_in_video: int | None = None,
    frames_unreadable: int = 0,
) -> run_pb2.RunSummary:
    """The summary of a run, for UploadAndRun's last event and for a finished job."""
    return run_pb2.RunSummary(
        pipeline_id=pipeline_id,
        pipeline_version=pipeline_version,
        frames_processed=frames_processed,
        frames_with_errors=frames_with_errors,
        wall_time=duration(wall_seconds),
        decode_time=duration(decode_seconds),
        node_timings=[
            run_pb2.NodeTiming(
                node_id=t.node_id,
                plugin=t.plugin,
                calls=t.calls,
                total_time=duration(t.total_seconds),
                errors=t.errors,
            )
            for t in timings
        ],
        ended_early=ended_early,
        frames_in_video=frames_in_video or 0,  # 0: not counted
        frames_unreadable=frames_unreadable,
    )


def pipeline_to_proto(spec: PipelineSpec) -> pipeline_pb2.Pipeline:
    message = pipeline_pb2.Pipeline(id=spec.id, version=spec.version, description=spec.description)
    for node in spec.nodes:
        proto_node = message.nodes.add(
            id=node.id,
            plugin=node.plugin_ref,
            on_error=_POLICIES[node.on_error],
            stateful=node.tool.stateful,
            inputs=[pipeline_pb2.NodeInput(name=name, source=str(source)) for name, source in node.inputs],
        )
        proto_node.params.update(node.given_params)
    message.outputs.extend(pipeline_pb2.PipelineOutput(name=name, source=str(s)) for name, s in spec.outputs)
    return message


# The most a status's texts may take, in UTF-8 bytes. A status travels in the call's trailers
# twice (the message, and the details that repeat it), and a client refuses trailers over its
# limit (8 KiB by default, some of it random between 8 and 16) with its own RESOURCE_EXHAUSTED
# and no details: an error echoing a 6,000-character id from the request must stay well under.
MAX_MESSAGE_BYTES = 1024


def status_from_error(error: VideodagError) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error: code, message, ErrorInfo and whatever details it
    has, each text cut to a bounded length (`clipped`) so that the status always reaches the client."""
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.status_code), message=clipped(error.message, MAX_MESSAGE_BYTES)
    )
    details = error.details
    metadata = {clipped(key, MAX_DETAIL_BYTES): clipped(value, MAX_DETAIL_BYTES)
                for key, value in details.metadata.items()}
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))
    if details.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=clipped(v.field, MAX_DETAIL_BYTES), description=clipped(v.description, MAX_DETAIL_BYTES)
                )
                for v in details.field_violations
            ]
        )
        status.details.add().Pack(bad_request)
    if details.resource is not None:
        status.details.add().Pack(
            error_details_pb2.ResourceInfo(
                resource_type=details.resource.resource_type,
                resource_name=clipped(details.resource.resource_name, MAX_DETAIL_BYTES),
                description=clipped(details.resource.description, MAX_DETAIL_BYTES),
            )
        )
    if details.retry_after_seconds is not None:
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration(details.retry_after_seconds)))
    return status


def clipped(text: str, max_bytes: int) -> str:
    """`text`, or as much of it as fits in `max_bytes` of UTF-8 with "…" after (never a broken character)."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    ellipsis = "…"
    kept = encoded[: max_bytes - len(ellipsis.encode())].decode(errors="ignore")
    return kept + ellipsis


def internal_status(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message=clipped(message, MAX_MESSAGE_BYTES))
