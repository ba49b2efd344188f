"""Run a named pipeline over the sampled frames of a video file.

The video layer adds no pipeline semantics: it decodes and samples frames, hands each one
to the DAG service as a `FramePayload`, and collects per-frame results in frame order.
Exceptions from the DAG service reach the caller unchanged.

Decoding runs ahead of the DAG by a bounded amount (`decode_ahead_bytes`): the two overlap,
the slower sets the pace, and a slow DAG or a slow reader of the events holds the decoder
back instead of letting frames pile up. A DAG service whose runs offer `process_frames` may
work on a few frames at once (`runs.frame_results`); results still come in frame order, each
as soon as it and those before it are ready. Where the decoder runs is the `isolation`:

* "process": a decoder process per run (`isolation.py`), frames through shared memory. A
  decoder crash or hang ends that run with a typed error, never the caller's process; the
  choice for untrusted uploads (the server's default).
* "thread": a decoder thread (`videodag-decode`) in this process, a little cheaper and the
  only choice where the caller must see the capture (tests with spies). No time limits: a
  native decoder that hangs or crashes takes this process with it.
"""

from __future__ import annotations

import copy
import os
import pickle
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

from videodag_service.video.decoder_context import start_decoder_server
from videodag_service.video.decoder_lifecycle import DecodersCannotStart, DecoderTimeouts, check_decoders_start
from videodag_service.video.events import FrameProcessed, RunEvent, RunFinished, RunStats, VideoOpened
from videodag_service.video.frame_ring import shared_memory_problem
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.isolated_video import IsolatedVideo
from videodag_service.video.isolation import StartedDecoder, open_isolated_video, start_decoder_ahead
from videodag_service.video.limits import VideoLimits
from videodag_service.video.payload import FramePayload
from videodag_service.video.pipelining import read_ahead
from videodag_service.video.reader import DecodedFrame, OpenedVideo, VideoOpener, VideoSource, open_video
from videodag_service.video.runs import SupportsRunPipeline, SupportsRuns, frame_results, open_pipeline_run
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window
from videodag_service.video.spare_decoder import SpareDecoder
from videodag_service.video.unreadable import unreadable

OptionsLike = SamplingOptions | Mapping[str, Any] | None
Isolation = Literal["process", "thread"]
ISOLATIONS: tuple[Isolation, ...] = ("process", "thread")

DECODE_THREAD_NAME = "videodag-decode"
# How far decoding may run ahead of the DAG, in bytes of decoded BGR frames: 11 frames of
# 768x576, 5 of 720p, 2 of 1080p, 1 of 4K. On 2 cores, 1 to 24 frames of 720p read-ahead
# measured the same throughput within noise: a few frames absorb one slow frame on either
# side, more would only cost memory.
DEFAULT_DECODE_AHEAD_BYTES = 16 * 1024 * 1024
DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS = DecoderTimeouts().frame_seconds
DEFAULT_DECODE_RUN_TIMEOUT_SECONDS = DecoderTimeouts().run_seconds


class VideoFilePipelineService:
    """Feeds the frames of a video file to a DAG service and collects the results.

    `frame_stride` and `max_frames` are defaults; per-call options override them (see
    `SamplingOptions.overridden_by`). `limits` are checked after probing, before any frame
    is decoded, and again on every decoded frame.

    `isolation` says where decoding runs (see the module docstring); "thread" by default
    for scripts and tests, the server asks for "process". With "process", a decoder making
    no progress for `decode_frame_timeout_seconds`, or that a run has waited for
    `decode_run_timeout_seconds` in total, is killed (DeadlineExceeded), and one that
    crashes ends the run with VideoUnreadable; None switches a limit off. `video_opener`
    opens files for decoding (`open_video`); with "process" it runs in the decoder process
    and must be a module-level function. With "process" the constructor also starts
    multiprocessing's forkserver if it is not running, so the first run does not wait for
    it; as with any multiprocessing program, a script's entry point needs the
    `if __name__ == "__main__":` guard. With `spare_decoder` (and "process") one decoder
    process is kept started for the next run (`spare_decoder.py`) until `close()`: a
    long-lived server's choice, where each run's first result comes sooner.

    Example::

        service = VideoFilePipelineService(dag_service, frame_stride=5)
        for item in service.run_on_file("people_v1", "clip.mp4", {"max_frames": 3}):
            print(item["frame_index"], item["result"])
    """

    def __init__(
        self,
        dag_service: SupportsRuns | SupportsRunPipeline,
        frame_stride: int = 1,
        max_frames: int | None = None,
        *,
        limits: VideoLimits | None = None,
        decode_ahead_bytes: int = DEFAULT_DECODE_AHEAD_BYTES,
        isolation: Isolation = "thread",
        decode_frame_timeout_seconds: float | None = DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS,
        decode_run_timeout_seconds: float | None = DEFAULT_DECODE_RUN_TIMEOUT_SECONDS,
        video_opener: VideoOpener = open_video,
        spare_decoder: bool = False,
    ) -> None:
        if decode_ahead_bytes <= 0:
            raise ValueError(f"decode_ahead_bytes must be positive, got {decode_ahead_bytes}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
        self._dag_service = dag_service
        self._decode_ahead_bytes = decode_ahead_bytes
        self._isolation = isolation
        self._timeouts = DecoderTimeouts(decode_frame_timeout_seconds, decode_run_timeout_seconds)
        self._video_opener = video_opener
        self._spare: SpareDecoder | None = None
        if isolation == "process":
            _check_sendable(video_opener)
            start_decoder_server()
            check_decoders_start()
            if (problem := shared_memory_problem()) is not None:
                raise DecodersCannotStart(problem)
            if spare_decoder:
                self._spare = SpareDecoder(video_opener, self._timeouts)
        self._default_sampling = SamplingOptions(frame_stride=frame_stride, max_frames=max_frames)
        self._limits = limits or VideoLimits()

    def run_on_file(
        self, pipeline_id: str, file_path: str | os.PathLike[str], options: OptionsLike = None
    ) -> list[dict[str, Any]]:
        """Process the whole file and return `[{"frame_index": i, "result": {...}}, ...]` in frame order."""
        return [
            {"frame_index": event.frame_index, "result": event.result}
            for event in self.stream_run(pipeline_id, file_path, options)
            if isinstance(event, FrameProcessed)
        ]

    def start_decoder_ahead(self) -> AbstractContextManager[StartedDecoder | None]:
        """A decoder process started now for a stored file that `stream_run(..., decoder=...)`
        names later; None with a decoder thread. Start it when an upload begins and the process
        is ready when the upload ends, instead of starting then. It serves one file and is
        killed on exit if no run took it.
        """
        if self._isolation != "process":
            return nullcontext(None)
        spare = None if self._spare is None else self._spare.take()
        return start_decoder_ahead(timeouts=self._timeouts, opener=self._video_opener, spare=spare)

    def close(self) -> None:
        """End the spare decoder process, if one is kept; runs after this start their own."""
        if self._spare is not None:
            self._spare.close()

    def stream_run(
        self, pipeline_id: str, file_path: str | os.PathLike[str], options: OptionsLike = None,
        *, decoder: StartedDecoder | None = None,
    ) -> Generator[RunEvent, None, None]:
        """Yield `VideoOpened`, one `FrameProcessed` per sampled frame, then `RunFinished`.

        Options are validated now (InvalidOptions); the file is opened on the first `next()`.
        Closing the iterator early releases the decoder and closes the pipeline run.
        `file_path` may be a `GrowingUpload`: decoding then keeps pace with the upload.
        `decoder`, from `start_decoder_ahead`, decodes a stored file.
        """
        sampling = self._default_sampling.overridden_by(options)
        source = file_path if isinstance(file_path, GrowingUpload) else Path(file_path)
        return self._events(pipeline_id, source, sampling, decoder)

    def _events(
        self, pipeline_id: str, source: VideoSource, sampling: SamplingOptions, decoder: StartedDecoder | None
    ) -> Generator[RunEvent, None, None]:
        started = time.perf_counter()
        frames_processed = 0
        with self._open(source, decoder) as video:
            self._limits.check_info(video.info)
            window = _plan(video, sampling)
            with open_pipeline_run(self._dag_service, pipeline_id) as run:
                # Decoding starts now, so the first frames are ready by the time the caller has
                # sent VideoOpened; it is stopped before the video is closed, however this
                # generator ends.
                with self._decode_ahead(video, window) as (frames, ready):
                    yield VideoOpened(video.info)
                    # One frame at a time while the upload still arrives: with several in
                    # flight, a finished frame's result could wait for the next frame's bytes.
                    overlap = not isinstance(source, GrowingUpload)
                    with closing(frame_results(run, _payloads(frames), overlap=overlap, ready=ready)) as results:
                        for payload, result in results:
                            event = _frame_event(payload, result)
                            # The pixels may be lent from the decoder's ring: hold them no longer
                            # than the pipeline does, so the slot goes back before the next frame.
                            del payload, result
                            yield event
                            frames_processed += 1
                node_timings = tuple(run.node_timings())
            decode_seconds = video.decode_seconds
            ended_early = video.ended_early
            frames_in_video = video.frames_in_video
            frames_unreadable = video.frames_unreadable
        yield RunFinished(
            RunStats(
                pipeline_id=pipeline_id,
                frames_processed=frames_processed,
                decode_seconds=decode_seconds,
                wall_seconds=time.perf_counter() - started,
                node_timings=node_timings,
                ended_early=ended_early,
                frames_in_video=frames_in_video,
                frames_unreadable=frames_unreadable,
            )
        )

    def _open(
        self, source: VideoSource, decoder: StartedDecoder | None
    ) -> AbstractContextManager[OpenedVideo | IsolatedVideo]:
        if self._isolation == "process":
            if decoder is None and self._spare is not None and not isinstance(source, GrowingUpload):
                spare = self._spare.take()
                if spare is not None:
                    decoder = StartedDecoder(self._video_opener, self._timeouts, spare)
            return open_isolated_video(
                source, timeouts=self._timeouts, ring_budget_bytes=self._decode_ahead_bytes,
                opener=self._video_opener, started=decoder,
            )
        return self._video_opener(source)

    @contextmanager
    def _decode_ahead(
        self, video: OpenedVideo | IsolatedVideo, window: FrameWindow
    ) -> Iterator[tuple[Iterator[DecodedFrame], Callable[[], bool]]]:
        """The sampled frames, decoded ahead of the caller by at most decode_ahead_bytes, and
        whether the next one is decoded already."""
        if isinstance(video, IsolatedVideo):
            # The decoder process is the read-ahead: it fills the ring while the DAG runs.
            with closing(video.frames(window, self._limits)) as frames:
                yield frames, video.frame_waiting
            return
        with read_ahead(
            video.frames(window, self._limits), self._decode_ahead_bytes,
            weigh=_image_bytes, thread_name=DECODE_THREAD_NAME,
        ) as drain:
            yield drain, drain.ready


def _payloads(frames: Iterator[DecodedFrame]) -> Iterator[FramePayload]:
    for frame in frames:
        payload = FramePayload(frame.frame_index, frame.timestamp_seconds, frame.image)
        del frame
        yield payload
        # Dropped before the next frame is asked for, which is when lent slots go back.
        del payload


def _frame_event(payload: Mapping[str, Any], result: Mapping[str, Any]) -> FrameProcessed:
    frame_index = payload["frame_index"]
    return FrameProcessed(frame_index, payload["timestamp"], _own_copy(result, frame_index))


def _plan(video: OpenedVideo | IsolatedVideo, sampling: SamplingOptions) -> FrameWindow:
    try:
        return plan_window(sampling, video.info.fps)
    except ValueError as error:
        raise unreadable(video.path, str(error)) from error


def _check_sendable(video_opener: VideoOpener) -> None:
    """The decoder process imports the opener by name: refuse a lambda or a local function now."""
    try:
        pickle.dumps(video_opener)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(f"video_opener must be a module-level function to run in a decoder process: {error}") from None


def _image_bytes(frame: DecodedFrame) -> int:
    return frame.image.nbytes


def _own_copy(result: Mapping[str, Any], frame_index: int) -> dict[str, Any]:
    """A deep copy, so a DAG service that reuses or later mutates its result cannot change
    what was already reported for an earlier frame."""
    if not isinstance(result, Mapping):
        kind = type(result).__name__
        raise TypeError(f"the DAG service returned {kind} for frame {frame_index}, not a mapping")
    return copy.deepcopy(dict(result))
