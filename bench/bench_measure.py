"""The benchmark's measurements, each a plain function returning what it timed.

Throughputs are best-of-N: on a shared 2-core machine noise only ever slows a run down,
so the fastest of a few runs is the best estimate of what the code can do, and the
callers take it for both sides of every ratio.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import grpc
import numpy as np
from bench_bare_stream import METHOD as BARE_STREAM_METHOD
from bench_media import SyntheticUpload
from bench_server import MemorySampler, ServerProcess

from videodag_client import (
    FrameResult,
    RunOptions,
    RunSummary,
    UploadReceived,
    VideodagClient,
    VideodagError,
)
from videodag_service.dag import DagPipelineService
from videodag_service.dag.plugin import ToolInstance


@dataclass(frozen=True)
class Throughput:
    items: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def best(throughputs: list[Throughput]) -> Throughput:
    return max(throughputs, key=lambda t: t.per_second)


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process so far (10 ms resolution)."""
    times = os.times()
    return times.user + times.system


def raw_decode(path: Path, max_frames: int | None = None, threads: int | None = None) -> Throughput:
    """The ceiling: open the file and `read()` every frame, in this process, OpenCV's defaults
    (or `threads` decoder threads).

    Opening counts (FFmpeg probes the stream, about 10 ms), as it does for the service.
    """
    started = time.perf_counter()
    parameters = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, parameters)
    frames = 0
    try:
        while max_frames is None or frames < max_frames:
            ok, _image = capture.read()
            if not ok:
                break
            frames += 1
    finally:
        elapsed = time.perf_counter() - started
        capture.release()
    return Throughput(frames, elapsed)


@dataclass(frozen=True)
class RunTiming:
    """One UploadAndRun call as the client saw it; times in seconds from the call."""

    frames: int
    upload_received: float
    first_frame: float
    finished: float

    @property
    def throughput(self) -> Throughput:
        return Throughput(self.frames, self.finished)

    @property
    def first_result_after_upload(self) -> float:
        return self.first_frame - self.upload_received


class PacedFile(io.RawIOBase):
    """A file read no faster than `bytes_per_second`: an upload over a slower link than loopback."""

    def __init__(self, path: Path, bytes_per_second: float) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._rate = bytes_per_second
        self._started: float | None = None
        self._sent = 0
        self.name = str(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._started is None:
            self._started = time.perf_counter()
        due = self._started + self._sent / self._rate
        time.sleep(max(0.0, due - time.perf_counter()))
        count = self._file.readinto(buffer) or 0
        self._sent += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def upload_and_run(client: VideodagClient, path: Path, pipeline_id: str, max_frames: int = 0, *,
                   upload_seconds: float = 0.0, decode_during_upload: bool = False) -> RunTiming:
    """Time a whole call: upload, decode, pipeline, every result received by the client.

    `upload_seconds` paces the upload to take about that long, as over a slower network.
    """
    options = RunOptions(max_frames=max_frames) if max_frames else None
    source: Path | BinaryIO = path
    if upload_seconds > 0:
        source = PacedFile(path, path.stat().st_size / upload_seconds)  # type: ignore[assignment]
    started = time.perf_counter()
    upload_received = first_frame = float("nan")
    frames = 0
    for event in client.upload_and_run(source, pipeline_id, options, checksum=False,
                                       decode_during_upload=decode_during_upload):
        now = time.perf_counter() - started
        if isinstance(event, UploadReceived):
            upload_received = now
        elif isinstance(event, FrameResult):
            frames += 1
            if frames == 1:
                first_frame = now
        elif isinstance(event, RunSummary) and event.frames_processed != frames:
            raise RuntimeError(f"summary says {event.frames_processed} frames, {frames} received")
    if isinstance(source, PacedFile):
        source.close()
    return RunTiming(frames, upload_received, first_frame, time.perf_counter() - started)


@dataclass(frozen=True)
class TrackingStages:
    decode: Throughput
    detect: Throughput
    track: Throughput
    detect_two_at_once: Throughput
    """Detection with two frames at once, an instance each, as the service's frame workers run it."""

    def slowest(self) -> tuple[str, Throughput]:
        return min(
            (("decode", self.decode), ("detect", self.detect), ("track", self.track)),
            key=lambda item: item[1].per_second,
        )


def _open_tracking_tools(pipeline_id: str) -> tuple[ToolInstance, ToolInstance]:
    """The detect and track tools of the pipeline, opened with its own parameters."""
    spec = DagPipelineService.from_folder().get_pipeline(pipeline_id)
    nodes = {node.id: node for node in spec.nodes}
    return nodes["detect"].tool.open(nodes["detect"].params), nodes["track"].tool.open(nodes["track"].params)


def _decoded_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    try:
        while len(frames) < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(image)
    finally:
        capture.release()
    return frames


def tracking_stages_alone(path: Path, pipeline_id: str, max_frames: int) -> TrackingStages:
    """Each stage of decode -> detect -> track on its own, on frames (or detections) held in memory."""
    frames = _decoded_frames(path, max_frames)
    detect, track = _open_tracking_tools(pipeline_id)
    detect.process({"image": frames[0]})  # the first calls set the network up: not timed
    started = time.perf_counter()
    detections = [detect.process({"image": image})["detections"] for image in frames]
    detect_alone = Throughput(len(frames), time.perf_counter() - started)
    started = time.perf_counter()
    for found in detections:
        track.process({"detections": found})
    track_alone = Throughput(len(detections), time.perf_counter() - started)
    return TrackingStages(raw_decode(path, max_frames), detect_alone, track_alone,
                          _detect_two_at_once(frames, pipeline_id))


def _detect_two_at_once(frames: list[np.ndarray], pipeline_id: str) -> Throughput:
    """Two threads, each with a detector of its own, taking every other frame."""
    detectors = [_open_tracking_tools(pipeline_id)[0] for _ in range(2)]
    for detector in detectors:
        detector.process({"image": frames[0]})

    def detect_every_other(first: int) -> None:
        for image in frames[first::2]:
            detectors[first].process({"image": image})

    threads = [threading.Thread(target=detect_every_other, args=(first,)) for first in (0, 1)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for detector in detectors:
        detector.close()
    return Throughput(len(frames), elapsed)


def best_stages(runs: list[TrackingStages]) -> TrackingStages:
    return TrackingStages(best([run.decode for run in runs]), best([run.detect for run in runs]),
                          best([run.track for run in runs]), best([run.detect_two_at_once for run in runs]))


def plain_tracking_script(path: Path, pipeline_id: str, max_frames: int) -> Throughput:
    """What a user would write without videodag: one loop, decode -> detect -> track, one thread."""
    detect, track = _open_tracking_tools(pipeline_id)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = 0
    started = time.perf_counter()
    try:
        while frames < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            track.process({"detections": detect.process({"image": image})["detections"]})
            frames += 1
    finally:
        elapsed = time.perf_counter() - started
        capture.release()
    return Throughput(frames, elapsed)


def upload_only(client: VideodagClient, source: Path | BinaryIO, size_bytes: int, *, chunk_size: int,
                checksum: bool) -> Throughput:
    """Bytes per second from the call to the server's UploadReceived; the run that follows
    (these bytes are not a video) fails and is not timed."""
    started = time.perf_counter()
    stream = client.upload_and_run(source, "frame_stats_v1", chunk_size=chunk_size, checksum=checksum)
    try:
        event = next(stream)
        elapsed = time.perf_counter() - started
        if not isinstance(event, UploadReceived) or event.size_bytes != size_bytes:
            raise RuntimeError(f"expected UploadReceived of {size_bytes} bytes, got {event!r}")
        try:
            for _ in stream:
                pass
        except VideodagError:
            pass
    finally:
        stream.close()
    return Throughput(size_bytes, elapsed)


def sha256_seconds_per_gb(megabytes: int = 256) -> float:
    """What hashing a GB costs on one core here, hashlib as the service calls it (1 MiB at a time)."""
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(megabytes):
        digest.update(block)
    return (time.perf_counter() - started) / (megabytes * len(block) / 1e9)


def bare_stream_upload(target: str, path: Path, chunk_size: int) -> Throughput:
    """The same file through the bare byte-stream server, raw bytes per message."""

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as file:
            while block := file.read(chunk_size):
                yield block

    with grpc.insecure_channel(target) as channel:
        upload = channel.stream_unary(BARE_STREAM_METHOD)
        started = time.perf_counter()
        received = int(upload(chunks()))
        elapsed = time.perf_counter() - started
    return Throughput(received, elapsed)


@dataclass(frozen=True)
class UploadMemory:
    size_bytes: int
    rss_before: int
    peak_rss: int
    """The largest VmRSS sampled (every 5 ms) during the upload."""
    hwm_before: int
    hwm_after: int

    @property
    def growth(self) -> int:
        """Peak over the baseline; VmHWM catches a peak between two samples when it rose."""
        peak = max(self.peak_rss, self.hwm_after if self.hwm_after > self.hwm_before else 0)
        return peak - self.rss_before


def upload_memory(server: ServerProcess, client: VideodagClient, size_bytes: int, chunk_size: int) -> UploadMemory:
    """The server's resident memory while it receives `size_bytes` of synthetic upload.

    The server should have served a call before, so what a first call allocates for good
    (thread stacks, buffers) is already in the baseline.
    """
    rss_before, hwm_before = server.memory()
    with MemorySampler(server) as sampler:
        source = io.BufferedReader(SyntheticUpload(size_bytes))
        upload_only(client, source, size_bytes, chunk_size=chunk_size, checksum=False)
    _rss, hwm_after = server.memory()
    return UploadMemory(size_bytes, rss_before, sampler.peak_rss, hwm_before, hwm_after)
