"""Shared checks of the hardening tests: raw calls, "the server still serves", and leak accounting."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ServerHarness

from fakes.waiting import wait_until
from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import FrameResult, RunOptions, RunSummary
from videodag_service.unread_results import WATCHDOG_THREAD_NAME
from videodag_service.video.decoder_lifecycle import DECODER_PROCESS_NAME
from videodag_service.video.spare_decoder import SPARE_PROCESS_NAME, SPARE_STARTER_THREAD_NAME

Request = video_pipeline_service_pb2.UploadAndRunRequest
Response = video_pipeline_service_pb2.UploadAndRunResponse

# What a hostile request or file may end with: the contract's typed refusals, never UNKNOWN.
TYPED_REFUSALS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DATA_LOSS,
})


def config(pipeline_id: str = "frame_stats_v1", **fields: object) -> Request:
    return Request(config=run_pb2.RunConfig(pipeline_id=pipeline_id, **fields))


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[Request]:
    for start in range(0, len(data), size):
        yield Request(chunk=data[start : start + size])


@dataclass
class CallOutcome:
    """How a raw UploadAndRun call ended: its responses, then OK or the status that ended it."""

    responses: list[Response]
    code: grpc.StatusCode
    details: str

    @property
    def frames(self) -> list[int]:
        return [r.frame.frame_index for r in self.responses if r.HasField("frame")]


def raw_call(channel: grpc.Channel, requests: Iterable[Request], timeout: float = 30.0) -> CallOutcome:
    """Drive UploadAndRun with hand-made messages and report how it ended, error or not."""
    stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
    responses: list[Response] = []
    try:
        for response in stub.UploadAndRun(iter(requests), timeout=timeout):
            responses.append(response)
    except grpc.RpcError as error:
        return CallOutcome(responses, error.code(), error.details() or "")
    return CallOutcome(responses, grpc.StatusCode.OK, "")


def health_status(target: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def assert_still_serving(server: ServerHarness, video: Path) -> None:
    """The server answers health checks and runs a small good video to the end."""
    assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
    # 32 KiB chunks fit under the smallest message limit a test sets (64 KiB).
    events = list(server.client.upload_and_run(video, "frame_stats_v1", RunOptions(max_frames=3),
                                               chunk_size=32 * 1024, timeout=30))
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 1, 2]
    assert isinstance(events[-1], RunSummary)




def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    """Resident memory of this process now (not the high-water mark)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Resources:
    """What a run could leak, counted in this process (the server is in-process)."""

    fds: int
    threads: int

    @classmethod
    def now(cls) -> Resources:
        return cls(open_fds(), threading.active_count())

    def settled_back(self, *, fd_slack: int = 0, thread_slack: int = 0, timeout: float = 10.0) -> Resources:
        """Wait until the counts are back to these (plus slack); returns what was last seen.

        Threads and descriptors of a finished call are released a little after its status
        reaches the client (gRPC's completion queue, the decode thread's join), hence the wait.
        """
        seen = [Resources.now()]

        def back() -> bool:
            seen[0] = Resources.now()
            return seen[0].fds <= self.fds + fd_slack and seen[0].threads <= self.threads + thread_slack

        wait_until(back, timeout=timeout, interval=0.05)
        return seen[0]


def decoder_processes() -> list[multiprocessing.process.BaseProcess]:
    """The decoder processes of this (server) process that are still alive."""
    return [process for process in multiprocessing.active_children() if process.name == DECODER_PROCESS_NAME]


def spare_decoders() -> list[int]:
    """The pids of this (server) process's spare decoder processes, none of them taken by a run yet."""
    return [process.pid for process in multiprocessing.active_children()
            if process.name == SPARE_PROCESS_NAME and process.pid is not None]


def threads_but_rpc_workers() -> list[str]:
    """Thread names, less gRPC's pool workers: the pool grows to its bound with concurrent calls."""
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("videodag-rpc"))


def settled_threads() -> list[str]:
    """`threads_but_rpc_workers()` once no call streams and no spare decoder is being started:
    the unread-results watchdog's thread lives only while calls stream, and ends a moment
    after the last call has ended; a spare's starter, a few milliseconds after a run took one."""
    transient = {WATCHDOG_THREAD_NAME, SPARE_STARTER_THREAD_NAME}
    assert wait_until(lambda: not transient & set(threads_but_rpc_workers())), threads_but_rpc_workers()
    return threads_but_rpc_workers()
