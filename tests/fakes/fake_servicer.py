"""A scriptable VideoPipelineService for client tests: records what arrives, answers from a script.

Served by a real grpc server on a loopback port, so the client under test goes through real
HTTP/2 framing, metadata, status trailers and cancellation.

    servicer = FakeVideoPipelineServicer()
    servicer.run_script = [AcknowledgeUpload(), frame_response(0), AbortWith(status), ...]
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from videodag.v1 import pipeline_pb2, run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc

ERROR_DOMAIN = "videodag.dev"


@dataclass(frozen=True)
class AcknowledgeUpload:
    """Step: send `upload_received` with the size and SHA-256 of the bytes that really arrived."""


@dataclass(frozen=True)
class AbortWith:
    """Step: end the call with this status (build it with `rich_status`)."""

    status: grpc.Status


@dataclass(frozen=True)
class WaitForCancellation:
    """Step: block until the client cancels or the timeout passes, then end the handler."""

    timeout_seconds: float = 10.0


ScriptStep: TypeAlias = (
    video_pipeline_service_pb2.UploadAndRunResponse | AcknowledgeUpload | AbortWith | WaitForCancellation
)


class FakeVideoPipelineServicer(video_pipeline_service_pb2_grpc.VideoPipelineServiceServicer):
    """Implements the generated servicer from plain attributes tests set and read."""

    def __init__(self, pipelines: Iterable[pipeline_pb2.Pipeline] = (), required_token: str | None = None):
        self.pipelines = {pipeline.id: pipeline for pipeline in pipelines}
        self.required_token = required_token
        self.run_script: list[ScriptStep] = []
        self.abort_after_config: grpc.Status | None = None
        """When set, UploadAndRun aborts with it right after the config, reading no chunk."""
        self.requests: list[video_pipeline_service_pb2.UploadAndRunRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.upload_finished = threading.Event()
        self.cancelled = threading.Event()
        """Set when an UploadAndRun call ends without the handler ending it: cancel or deadline."""

    @property
    def config(self) -> run_pb2.RunConfig:
        return self.requests[0].config

    @property
    def chunks(self) -> list[bytes]:
        return [request.chunk for request in self.requests[1:]]

    def uploaded_bytes(self) -> bytes:
        return b"".join(self.chunks)

    def SubmitJob(
        self, request_iterator: Iterator[video_pipeline_service_pb2.SubmitJobRequest], context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.SubmitJobResponse:
        """Reads the whole upload, as a server storing it does, then stores no job: a client's
        own failure while it sends (a file that reads text) comes first, as against a real server."""
        for _ in request_iterator:
            pass
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake server keeps no jobs")

    def UploadAndRun(
        self,
        request_iterator: Iterator[video_pipeline_service_pb2.UploadAndRunRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        ended_by_server = threading.Event()

        def on_termination() -> None:
            # grpc stops pulling a streaming handler once the client is gone, so the handler
            # itself may never learn of a cancellation; termination it did not cause is one.
            if not ended_by_server.is_set():
                self.cancelled.set()

        context.add_callback(on_termination)
        self._authenticate(context, ended_by_server)
        self.requests.append(next(request_iterator))
        if self.abort_after_config is not None:
            ended_by_server.set()
            context.abort_with_status(self.abort_after_config)
        for request in request_iterator:
            self.requests.append(request)
        self.upload_finished.set()
        for step in self.run_script:
            if isinstance(step, AcknowledgeUpload):
                data = self.uploaded_bytes()
                yield video_pipeline_service_pb2.UploadAndRunResponse(
                    upload_received=run_pb2.UploadReceived(
                        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
                    )
                )
            elif isinstance(step, AbortWith):
                ended_by_server.set()
                context.abort_with_status(step.status)
            elif isinstance(step, WaitForCancellation):
                self._wait_until_inactive(context, step.timeout_seconds)
                if context.is_active():
                    ended_by_server.set()
                return
            else:
                yield step
        ended_by_server.set()

    def ListPipelines(
        self, request: video_pipeline_service_pb2.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.ListPipelinesResponse:
        self._authenticate(context)
        return video_pipeline_service_pb2.ListPipelinesResponse(
            pipelines=[self.pipelines[pipeline_id] for pipeline_id in sorted(self.pipelines)]
        )

    def GetPipeline(
        self, request: video_pipeline_service_pb2.GetPipelineRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetPipelineResponse:
        self._authenticate(context)
        if request.pipeline_id not in self.pipelines:
            context.abort_with_status(
                rich_status(
                    code_pb2.NOT_FOUND,
                    f"unknown pipeline {request.pipeline_id!r}; known pipelines: {', '.join(sorted(self.pipelines))}",
                    reason="PIPELINE_NOT_FOUND",
                    metadata={"pipeline_id": request.pipeline_id},
                    resource=("videodag.v1.Pipeline", request.pipeline_id),
                )
            )
        return video_pipeline_service_pb2.GetPipelineResponse(pipeline=self.pipelines[request.pipeline_id])

    def _authenticate(self, context: grpc.ServicerContext, ended_by_server: threading.Event | None = None) -> None:
        metadata = {item.key: item.value for item in context.invocation_metadata()}
        self.metadata.append(metadata)
        if self.required_token is not None and metadata.get("authorization") != f"Bearer {self.required_token}":
            if ended_by_server is not None:
                ended_by_server.set()
            context.abort_with_status(
                rich_status(code_pb2.UNAUTHENTICATED, "missing or bad bearer token", reason="BAD_TOKEN")
            )

    @staticmethod
    def _wait_until_inactive(context: grpc.ServicerContext, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)


def rich_status(
    code: int,
    message: str,
    *,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    field_violations: Sequence[tuple[str, str]] = (),
    resource: tuple[str, str] | None = None,
    retry_after_seconds: float | None = None,
) -> grpc.Status:
    """A status with `google.rpc` details, as the real server sends them."""
    details: list[Any] = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {}))
    if field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                    for field, description in field_violations
                ]
            )
        )
    if resource is not None:
        details.append(error_details_pb2.ResourceInfo(resource_type=resource[0], resource_name=resource[1]))
    if retry_after_seconds is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=seconds(retry_after_seconds)))
    packed = []
    for detail in details:
        container = any_pb2.Any()
        container.Pack(detail)
        packed.append(container)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


def frame_response(
    frame_index: int, fps: float, result: dict[str, Any], node_errors: Sequence[run_pb2.NodeError] = ()
) -> video_pipeline_service_pb2.UploadAndRunResponse:
    timestamp = seconds(frame_index / fps)
    result_struct = struct_pb2.Struct()
    result_struct.update(result)
    return video_pipeline_service_pb2.UploadAndRunResponse(
        frame=run_pb2.FrameResult(
            frame_index=frame_index, timestamp=timestamp, result=result_struct, node_errors=node_errors
        )
    )


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def video_info_response(
    *, fps: float = 25.0, frame_count: int = 120, size_bytes: int = 0
) -> video_pipeline_service_pb2.UploadAndRunResponse:
    return video_pipeline_service_pb2.UploadAndRunResponse(
        video_info=run_pb2.VideoInfo(
            fps=fps,
            frame_count=frame_count,
            width=768,
            height=576,
            duration=seconds(frame_count / fps),
            codec="avc1",
            size_bytes=size_bytes,
        )
    )


def summary_response(
    frames_processed: int, frames_with_errors: int = 0, ended_early: bool = False, frames_in_video: int = 0,
    frames_unreadable: int = 0,
) -> video_pipeline_service_pb2.UploadAndRunResponse:
    return video_pipeline_service_pb2.UploadAndRunResponse(
        summary=run_pb2.RunSummary(
            pipeline_id="people_tracking_v1",
            pipeline_version="1.2.0",
            frames_processed=frames_processed,
            wall_time=seconds(1.75),
            decode_time=seconds(0.25),
            frames_with_errors=frames_with_errors,
            ended_early=ended_early,
            frames_in_video=frames_in_video,
            frames_unreadable=frames_unreadable,
            node_timings=[
                run_pb2.NodeTiming(
                    node_id="detect", plugin="ssdlite.detect_people", calls=frames_processed,
                    total_time=seconds(1.2), errors=0,
                ),
                run_pb2.NodeTiming(
                    node_id="track", plugin="bytetrack.track", calls=frames_processed,
                    total_time=seconds(0.05), errors=frames_with_errors,
                ),
            ],
        )
    )


def people_pipeline() -> pipeline_pb2.Pipeline:
    params = struct_pb2.Struct()
    params.update({"min_score": 0.5, "max_detections": 50})
    return pipeline_pb2.Pipeline(
        id="people_tracking_v1",
        version="1.2.0",
        description="Finds people and follows them across frames.",
        nodes=[
            pipeline_pb2.PipelineNode(
                id="detect",
                plugin="ssdlite.detect_people",
                params=params,
                inputs=[pipeline_pb2.NodeInput(name="image", source="frame.image")],
                on_error=pipeline_pb2.NODE_ERROR_POLICY_FAIL,
            ),
            pipeline_pb2.PipelineNode(
                id="track",
                plugin="bytetrack.track",
                inputs=[
                    pipeline_pb2.NodeInput(name="detections", source="detect.detections"),
                    pipeline_pb2.NodeInput(name="timestamp", source="frame.timestamp"),
                ],
                on_error=pipeline_pb2.NODE_ERROR_POLICY_SKIP,
                stateful=True,
            ),
        ],
        outputs=[pipeline_pb2.PipelineOutput(name="tracks", source="track.tracks")],
    )


def motion_pipeline() -> pipeline_pb2.Pipeline:
    return pipeline_pb2.Pipeline(
        id="motion_v1",
        version="0.3.0",
        description="Measures how much of each frame moved.",
        nodes=[
            pipeline_pb2.PipelineNode(
                id="motion",
                plugin="motion.frame_difference",
                inputs=[pipeline_pb2.NodeInput(name="image", source="frame.image")],
            )
        ],
        outputs=[pipeline_pb2.PipelineOutput(name="motion", source="motion.score")],
    )


@contextmanager
def serving(servicer: FakeVideoPipelineServicer) -> Iterator[str]:
    """Serves the fake on a free loopback port; yields its "host:port" target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    video_pipeline_service_pb2_grpc.add_VideoPipelineServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()
