"""Run a named pipeline over the sampled frames of a video file.

The video layer adds no pipeline semantics: it decodes and samples frames, hands each one
to the DAG service as a `FramePayload`, and collects per-frame results in frame order.
Exceptions from the DAG service reach the caller unchanged.

Decoding runs in its own thread (`videodag-decode`), a bounded read-ahead in front of the
DAG, which runs in the caller's thread: the two overlap, the slower sets the pace, and a
slow DAG or a slow reader of the events holds the decoder back instead of letting frames
pile up. Each frame's event is yielded as soon as its result is ready.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

from videodag_service.video.events import FrameProcessed, RunEvent, RunFinished, RunStats, VideoOpened
from videodag_service.video.limits import VideoLimits
from videodag_service.video.payload import FramePayload
from videodag_service.video.pipelining import read_ahead
from videodag_service.video.reader import DecodedFrame, OpenedVideo, open_video, unreadable
from videodag_service.video.runs import SupportsRunPipeline, SupportsRuns, open_pipeline_run
from videodag_service.video.sampling import FrameWindow, SamplingOptions, plan_window

OptionsLike = SamplingOptions | Mapping[str, Any] | None

DECODE_THREAD_NAME = "videodag-decode"
# How far decoding may run ahead of the DAG, in bytes of decoded BGR frames: 11 frames of
# 768x576, 5 of 720p, 2 of 1080p, 1 of 4K. On 2 cores, 1 to 24 frames of 720p read-ahead
# measured the same throughput within noise: a few frames absorb one slow frame on either
# side, more would only cost memory.
DEFAULT_DECODE_AHEAD_BYTES = 16 * 1024 * 1024


class VideoFilePipelineService:
    """Feeds the frames of a video file to a DAG service and collects the results.

    `frame_stride` and `max_frames` are defaults; per-call options override them (see
    `SamplingOptions.overridden_by`). `limits` are checked after probing, before any frame
    is decoded, and again on every decoded frame.

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
    ) -> None:
        if decode_ahead_bytes <= 0:
            raise ValueError(f"decode_ahead_bytes must be positive, got {decode_ahead_bytes}")
        self._dag_service = dag_service
        self._decode_ahead_bytes = decode_ahead_bytes
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

    def stream_run(
        self, pipeline_id: str, file_path: str | os.PathLike[str], options: OptionsLike = None
    ) -> Generator[RunEvent, None, None]:
        """Yield `VideoOpened`, one `FrameProcessed` per sampled frame, then `RunFinished`.

        Options are validated now (InvalidOptions); the file is opened on the first `next()`.
        Closing the iterator early releases the decoder and closes the pipeline run.
        """
        sampling = self._default_sampling.overridden_by(options)
        return self._events(pipeline_id, Path(file_path), sampling)

    def _events(
        self, pipeline_id: str, path: Path, sampling: SamplingOptions
    ) -> Generator[RunEvent, None, None]:
        started = time.perf_counter()
        frames_processed = 0
        with open_video(path) as video:
            self._limits.check_info(video.info)
            window = _plan(video, sampling)
            with open_pipeline_run(self._dag_service, pipeline_id) as run:
                # Decoding starts now, in its own thread, so the first frames are ready by the
                # time the caller has sent VideoOpened; it is stopped and joined before the
                # capture is released, however this generator ends.
                decoded = video.frames(window, self._limits)
                with read_ahead(
                    decoded, self._decode_ahead_bytes, weigh=_image_bytes, thread_name=DECODE_THREAD_NAME
                ) as frames:
                    yield VideoOpened(video.info)
                    for frame in frames:
                        payload = FramePayload(frame.frame_index, frame.timestamp_seconds, frame.image)
                        result = _own_copy(run.process(payload), frame.frame_index)
                        yield FrameProcessed(frame.frame_index, frame.timestamp_seconds, result)
                        frames_processed += 1
                node_timings = tuple(run.node_timings())
            decode_seconds = video.decode_seconds
        yield RunFinished(
            RunStats(
                pipeline_id=pipeline_id,
                frames_processed=frames_processed,
                decode_seconds=decode_seconds,
                wall_seconds=time.perf_counter() - started,
                node_timings=node_timings,
            )
        )


def _plan(video: OpenedVideo, sampling: SamplingOptions) -> FrameWindow:
    try:
        return plan_window(sampling, video.info.fps)
    except ValueError as error:
        raise unreadable(video.path, str(error)) from error


def _image_bytes(frame: DecodedFrame) -> int:
    return frame.image.nbytes


def _own_copy(result: Mapping[str, Any], frame_index: int) -> dict[str, Any]:
    """A deep copy, so a DAG service that reuses or later mutates its result cannot change
    what was already reported for an earlier frame."""
    if not isinstance(result, Mapping):
        kind = type(result).__name__
        raise TypeError(f"the DAG service returned {kind} for frame {frame_index}, not a mapping")
    return copy.deepcopy(dict(result))
