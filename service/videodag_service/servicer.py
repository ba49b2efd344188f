"""The gRPC servicer: a translator between the contract and the domain.

It turns requests into plain values, calls the upload, video and DAG layers, and
turns their events and errors back into protobuf and status codes. No decoding, DAG
or file logic lives here.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager

import grpc

from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_service import convert
from videodag_service.call_slots import CallSlots, RunSlots
from videodag_service.call_status import abort, status_name
from videodag_service.call_watch import CallWatch
from videodag_service.client_streams import chunks, first_config
from videodag_service.dag import DagPipelineService, PipelineSpec
from videodag_service.errors import RunCancelled, ServerDraining, TooManyRuns, UploadCorrupted
from videodag_service.job_servicer import JobRpcs, too_many_job_uploads, too_many_watches
from videodag_service.jobs import JobService
from videodag_service.memory_release import video_work
from videodag_service.observability import UNKNOWN_PIPELINE, ServerMetrics
from videodag_service.observability.call_deadline import ended_by_its_deadline
from videodag_service.settings import Settings
from videodag_service.unread_results import UnreadResultsWatchdog
from videodag_service.upload_idle import first_message_watching_idle, store_watching_idle
from videodag_service.video import (
    BackgroundUpload,
    FrameProcessed,
    RunEvent,
    RunFinished,
    SamplingOptions,
    StoredUpload,
    UploadReceiver,
    VideoFilePipelineService,
    VideoOpened,
    missing_stored_copy_as_error,
    naming_the_upload,
    receive_upload,
    suffix_for_file_name,
)
from videodag_service.video.isolation import StartedDecoder
from videodag_service.video.pipelining import read_ahead
from videodag_service.video.upload import checked_declared_size

logger = logging.getLogger(__name__)

RUN_THREAD_NAME = "videodag-run"
# How many events the run may get ahead of sending them: enough to keep the pipeline busy
# while one result is written, few enough that a slow client holds the run back at once.
EVENTS_AHEAD = 4
# How long a stream that ended short of its declared size may take to turn out cancelled (its
# client died): gRPC can report the end of the stream a moment before the cancel.
_STREAM_END_SETTLE_SECONDS = 0.5
SERVICE_NAME = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"].full_name


def _cut_short(corrupted: UploadCorrupted) -> bool:
    """Whether the upload ended short of its declared size, as when its client died: a checksum
    that differs over every declared byte is the client's answer, given without the settling wait."""
    metadata = corrupted.details.metadata
    received, declared = metadata.get("received_size_bytes"), metadata.get("declared_size_bytes")
    return received is not None and declared is not None and int(received) < int(declared)


class PipelinesTooLarge(ValueError):
    """Raised at start when the pipelines' descriptions make a listing no client could receive."""


def pipeline_listing(dag: DagPipelineService, max_bytes: int) -> video_pipeline_service_pb2.ListPipelinesResponse:
    """Every pipeline's description, as ListPipelines answers: made once, since pipelines are
    read at start only. Each parameter holds at most 100,000 values, but a pipeline file may
    give many nodes such a parameter (YAML aliases make that a few lines), and a listing larger
    than `max_bytes` would fail for every client, hiding every other pipeline too: the server
    does not start on such pipelines, naming the largest."""
    described = [(spec, convert.pipeline_to_proto(spec)) for spec in dag.pipelines()]
    listing = video_pipeline_service_pb2.ListPipelinesResponse(pipelines=[message for _, message in described])
    if (size := listing.ByteSize()) > max_bytes:
        largest, message = max(described, key=lambda pair: pair[1].ByteSize())
        raise PipelinesTooLarge(
            f"the pipelines' descriptions take {size:,} bytes, more than the {max_bytes:,} a ListPipelines answer "
            f"may (the 4 MiB gRPC clients receive by default, or --max-message-bytes if lower): the largest is "
            f"{largest.source_path} ({message.ByteSize():,} bytes); shorten its parameters or description, or "
            f"serve fewer pipelines"
        )
    return listing


class VideoPipelineServicer(JobRpcs, video_pipeline_service_pb2_grpc.VideoPipelineServiceServicer):
    """Implements `videodag.v1.VideoPipelineService` on top of the DAG and video layers."""

    def __init__(
        self,
        dag: DagPipelineService,
        settings: Settings,
        run_slots: RunSlots,
        jobs: JobService,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._listing = pipeline_listing(dag, settings.max_response_bytes())
        self._dag = dag
        self._jobs = jobs
        self._settings = settings
        self._upload_idle_seconds = settings.upload_idle_timeout_seconds
        self._upload_min_rate = float(settings.upload_min_bytes_per_second)
        self._max_response_bytes = settings.max_response_bytes()
        self._unread_results = UnreadResultsWatchdog(settings.result_read_timeout_seconds)
        self._run_slots = run_slots
        self._watch_slots = CallSlots(settings.max_job_watches, too_many_watches)
        self._job_upload_slots = CallSlots(settings.max_job_uploads, too_many_job_uploads)
        self._metrics = metrics or ServerMetrics()
        self._video = VideoFilePipelineService(
            dag,
            limits=settings.video_limits(),
            isolation=settings.decode_isolation,
            decode_frame_timeout_seconds=settings.decode_frame_timeout_seconds or None,
            decode_run_timeout_seconds=settings.decode_run_timeout_seconds or None,
            spare_decoder=True,
        )

    def close(self) -> None:
        """End what the servicer keeps between calls (its spare decoder process); call once its calls have ended."""
        self._video.close()

    def wait_for_job_uploads(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the SubmitJob uploads in progress; True if none is left."""
        return self._job_upload_slots.wait_until_idle(timeout)

    def add_to_server(self, server: grpc.Server) -> None:
        video_pipeline_service_pb2_grpc.add_VideoPipelineServiceServicer_to_server(self, server)

    def UploadAndRun(
        self,
        request_iterator: Iterator[video_pipeline_service_pb2.UploadAndRunRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        return self._unread_results.watching(self._upload_and_run_call(request_iterator, context), context)

    def _upload_and_run_call(
        self,
        request_iterator: Iterator[video_pipeline_service_pb2.UploadAndRunRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        started = time.perf_counter()
        pipeline_id = UNKNOWN_PIPELINE
        try:
            # The place in line is taken before the config arrives: a stream that never sends it
            # would otherwise hold a server thread uncounted, and enough of them every thread.
            with self._run_slots.hold(context) as turn, video_work():
                config: run_pb2.RunConfig = first_message_watching_idle(
                    first_config, request_iterator, self._upload_idle_seconds
                )
                sampling = convert.checked_run_config(config)
                spec = self._dag.get_pipeline(config.pipeline_id)
                pipeline_id = spec.id
                checked_declared_size(config.declared_size_bytes or None, self._settings.max_upload_bytes)
                turn.wait()
                started = time.perf_counter()  # the run's wall time leaves out its wait in line
                yield from self._upload_and_run(spec, config, sampling, request_iterator, context, started)
        except GeneratorExit:  # gRPC closed the response stream: the client cancelled or left, or the deadline passed
            ended = "DEADLINE_EXCEEDED" if ended_by_its_deadline(context) else "CANCELLED"
            self._metrics.record_run(pipeline_id, ended)
            raise
        except Exception as error:
            if isinstance(error, RunCancelled | grpc.RpcError):  # the client's cancel, or the shutdown's
                error = self._run_slots.ended_by_the_shutdown("the upload") or error
            if not _never_ran(error):
                self._metrics.record_run(pipeline_id, status_name(error, context))
            abort(context, convert.located_in_request(error, convert.RUN_CONFIG_PATH))
        else:
            self._metrics.record_run(pipeline_id)

    def ListPipelines(
        self, request: video_pipeline_service_pb2.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.ListPipelinesResponse:
        return self._listing

    def GetPipeline(
        self, request: video_pipeline_service_pb2.GetPipelineRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetPipelineResponse:
        try:
            spec = self._dag.get_pipeline(request.pipeline_id)
        except Exception as error:
            abort(context, error)
        return video_pipeline_service_pb2.GetPipelineResponse(pipeline=convert.pipeline_to_proto(spec))

    def _upload_and_run(
        self,
        spec: PipelineSpec,
        config: run_pb2.RunConfig,
        sampling: SamplingOptions,
        requests: Iterator[video_pipeline_service_pb2.UploadAndRunRequest],
        context: grpc.ServicerContext,
        started: float,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        """Store the upload, then stream the run's events; the temp file lives exactly as long as this."""
        watch = CallWatch(context, self._run_slots)
        with receive_upload(
            self._settings.temp_dir,
            max_upload_bytes=self._settings.max_upload_bytes,
            declared_size=config.declared_size_bytes or None,
            declared_sha256=config.sha256 or None,
            suffix=suffix_for_file_name(config.file_name),
            file_name=config.file_name,
        ) as upload, naming_the_upload(upload.path.name, config.file_name):
            if config.decode_during_upload:
                yield from self._run_during_upload(spec, upload, sampling, requests, watch, started)
                return
            # The decoder process starts while the bytes arrive, so it is ready when they are in.
            with self._video.start_decoder_ahead() as decoder:
                try:
                    stored = store_watching_idle(
                        functools.partial(_store_all, upload), _while_it_can_start(decoder, chunks(requests)),
                        self._upload_idle_seconds, min_bytes_per_second=self._upload_min_rate,
                    )
                except UploadCorrupted as corrupted:
                    if _cut_short(corrupted):  # fewer bytes than declared: a client that ended early, or died
                        watch.check_soon(_STREAM_END_SETTLE_SECONDS)
                    raise
                watch.check()  # a stream that ended because its client died is not a video to run
                yield self._upload_received(spec, stored)
                events = self._video.stream_run(spec.id, stored.path, sampling, decoder=decoder)
                with _running_ahead(events) as ahead, missing_stored_copy_as_error(stored.path):
                    yield from self._run_events(spec, ahead, watch, started)

    def _run_during_upload(
        self,
        spec: PipelineSpec,
        upload: UploadReceiver,
        sampling: SamplingOptions,
        requests: Iterator[video_pipeline_service_pb2.UploadAndRunRequest],
        watch: CallWatch,
        started: float,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        """Decode the upload as it arrives; `upload_received` goes out between frames once it is in.

        A run that fails because its upload did (the reader saw the file end early) reports
        the upload's error, and a cancelled call reports the cancel, not the truncated file.
        """
        with BackgroundUpload(upload, chunks(requests), self._upload_idle_seconds,
                              min_bytes_per_second=self._upload_min_rate) as arriving:
            events = self._video.stream_run(spec.id, arriving.growing, sampling)
            try:
                with _running_ahead(events) as ahead, missing_stored_copy_as_error(upload.path):
                    yield from self._run_events(spec, ahead, watch, started, arriving)
            except Exception:
                watch.check()
                arriving.check()
                raise

    def _upload_received(
        self, spec: PipelineSpec, stored: StoredUpload
    ) -> video_pipeline_service_pb2.UploadAndRunResponse:
        self._metrics.record_upload(spec.id, stored.size_bytes)
        return convert.upload_received_event(stored)

    def _run_events(
        self,
        spec: PipelineSpec,
        events: Iterator[RunEvent],
        watch: CallWatch,
        started: float,
        arriving: BackgroundUpload | None = None,
    ) -> Iterator[video_pipeline_service_pb2.UploadAndRunResponse]:
        """The run's events as responses; with an upload still `arriving`, its `upload_received`
        goes out at the first event after it is stored, and at the latest before the summary."""
        frames_with_errors = 0
        for event in events:
            watch.check()
            if arriving is not None and (stored := arriving.check()) is not None:
                yield self._upload_received(spec, stored)
                arriving = None
            if isinstance(event, FrameProcessed):
                frames_with_errors += "errors" in event.result
                self._metrics.record_frame(spec.id)
                yield convert.frame_event(event.frame_index, event.timestamp_seconds, event.result)
            elif isinstance(event, VideoOpened):
                yield convert.video_info_event(event.info)
            elif isinstance(event, RunFinished):
                if arriving is not None:
                    yield self._upload_received(spec, arriving.wait())
                stats = event.summary
                yield video_pipeline_service_pb2.UploadAndRunResponse(
                    summary=convert.run_summary(
                        spec.id,
                        spec.version,
                        frames_processed=stats.frames_processed,
                        frames_with_errors=frames_with_errors,
                        wall_seconds=time.perf_counter() - started,
                        decode_seconds=stats.decode_seconds,
                        timings=stats.node_timings,
                        ended_early=stats.ended_early,
                        frames_in_video=stats.frames_in_video,
                        frames_unreadable=stats.frames_unreadable,
                    )
                )


def _never_ran(error: Exception) -> bool:
    """A call refused its slot: TOO_MANY_RUNS, or the shutdown's refusal of new work (a call the
    shutdown ends after it began, `EndedByShutdown`, ran). It counts in the calls, not the runs."""
    return isinstance(error, TooManyRuns) or type(error) is ServerDraining


def _while_it_can_start(
    decoder: StartedDecoder | None, chunks: Iterator[bytes | memoryview]
) -> Iterator[bytes | memoryview]:
    """The chunks, until the decoder started for them has failed to start (no process left,
    say): the call then fails with that error at once, not after the whole upload."""
    for chunk in chunks:
        if decoder is not None:
            decoder.raise_if_failed()
        yield chunk


def _store_all(upload: UploadReceiver, chunks: Iterator[bytes | memoryview]) -> StoredUpload:
    """Every chunk into the upload, then its checks; on the thread `store_watching_idle` gives it."""
    for chunk in chunks:
        upload.write(chunk)
    return upload.finish()


@contextmanager
def _running_ahead(events: Generator[RunEvent, None, None]) -> Iterator[Iterator[RunEvent]]:
    """The run's events, produced in a thread of their own a few events ahead of the caller.

    The pipeline then works on the next frames while this thread converts and sends a
    result (gRPC's synchronous server waits for each message to be written): the two
    overlap instead of adding up. On exit the run is closed, in its thread, before the
    block exits: a cancelled call releases the decoder and the pipeline's nodes at once.
    """
    with closing(events), read_ahead(events, EVENTS_AHEAD, thread_name=RUN_THREAD_NAME) as ahead:
        yield ahead
