"""Video files in, per-frame pipeline results out: upload, probe, decode, sample, feed the DAG.

This package knows no gRPC and no pipeline semantics. The public surface:

* `receive_upload` / `UploadReceiver` / `StoredUpload`: chunks -> private temp file, with limits.
* `BackgroundUpload` / `GrowingUpload`: store an upload in a thread while its bytes are
  decoded as they arrive (`growing_upload` says which files allow it).
* `open_video`, `probe_video`, `VideoInfo`, `VideoLimits`: open and check a file.
* `SamplingOptions`: frame stride, max frames, time window.
* `naming_the_upload`, `missing_stored_copy_as_error`: errors about a video the service stored
  itself, worded for its sender.
* `VideoFilePipelineService`: run a pipeline over a file (`run_on_file`, `stream_run`), with
  the events `VideoOpened`, `FrameProcessed`, `RunFinished` (`RunStats`); decoding in a
  thread or, for untrusted files, in a decoder process (`Isolation`, `DecoderTimeouts`,
  `open_isolated_video`, `start_decoder_server`; `DecodersCannotStart` when no decoder
  process starts).
* `VideoOpener`: what opens a file for decoding (`open_video` unless substituted).
* `SupportsRuns`, `PipelineRun`, `NodeTimingLike`, `SupportsRunPipeline`: what a DAG
  service must offer.
* `FramePayload`: what each frame looks like to the DAG service.
"""

from videodag_service.video.background_upload import BackgroundUpload
from videodag_service.video.decoder_context import start_decoder_server
from videodag_service.video.decoder_lifecycle import DecodersCannotStart, DecoderTimeouts
from videodag_service.video.events import FrameProcessed, RunEvent, RunFinished, RunStats, VideoOpened
from videodag_service.video.file_pipeline import (
    DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS,
    DEFAULT_DECODE_RUN_TIMEOUT_SECONDS,
    Isolation,
    VideoFilePipelineService,
)
from videodag_service.video.growing_upload import GrowingUpload
from videodag_service.video.info import VideoInfo
from videodag_service.video.isolated_video import IsolatedVideo
from videodag_service.video.isolation import open_isolated_video
from videodag_service.video.limits import VideoLimits
from videodag_service.video.payload import PAYLOAD_KEYS, FramePayload
from videodag_service.video.reader import DecodedFrame, OpenedVideo, VideoOpener, open_video, probe_video
from videodag_service.video.runs import NodeTimingLike, PipelineRun, SupportsRunPipeline, SupportsRuns
from videodag_service.video.sampling import SamplingOptions
from videodag_service.video.stored_copies import missing_stored_copy_as_error, naming_the_upload
from videodag_service.video.upload import (
    StoredUpload,
    UploadReceiver,
    receive_upload,
    storage_errors,
    suffix_for_file_name,
)

__all__ = [
    "DEFAULT_DECODE_FRAME_TIMEOUT_SECONDS",
    "DEFAULT_DECODE_RUN_TIMEOUT_SECONDS",
    "PAYLOAD_KEYS",
    "BackgroundUpload",
    "DecodedFrame",
    "DecoderTimeouts",
    "DecodersCannotStart",
    "FramePayload",
    "FrameProcessed",
    "GrowingUpload",
    "IsolatedVideo",
    "Isolation",
    "NodeTimingLike",
    "OpenedVideo",
    "PipelineRun",
    "RunEvent",
    "RunFinished",
    "RunStats",
    "SamplingOptions",
    "StoredUpload",
    "SupportsRunPipeline",
    "SupportsRuns",
    "UploadReceiver",
    "VideoFilePipelineService",
    "VideoInfo",
    "VideoLimits",
    "VideoOpened",
    "VideoOpener",
    "missing_stored_copy_as_error",
    "naming_the_upload",
    "open_isolated_video",
    "open_video",
    "probe_video",
    "receive_upload",
    "start_decoder_server",
    "storage_errors",
    "suffix_for_file_name",
]
