"""Load on loopback: held uploads fill every run slot, the excess is refused fast, and hundreds of
runs later the server holds no more descriptors, threads or memory than before."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from hardening_support import Request, Resources, chunks, config, raw_call, rss_bytes, wait_until
from harness import ServerFactory

from videodag_client import FrameResult, ResourceExhausted, RunOptions, RunSummary

SLOTS = 4
EXCESS_CALLERS = 16
REFUSALS_PER_CALLER = 10
RUNS = 300
RUN_THREADS = 4


def held_upload(video: bytes, release: threading.Event) -> Iterator[Request]:
    """A config and the first chunk, then nothing until released: a slow uploader holding its slot."""
    parts = list(chunks(video, 16 * 1024))
    yield config()
    yield parts[0]
    release.wait(30)
    yield from parts[1:]


def test_held_uploads_fill_the_slots_and_the_excess_is_refused_fast(
    make_server: ServerFactory, make_video
) -> None:
    server = make_server(max_concurrent_runs=SLOTS, max_waiting_runs=0)
    video_path: Path = make_video(20)
    video = video_path.read_bytes()
    release = threading.Event()
    channels = [grpc.insecure_channel(server.target) for _ in range(SLOTS)]
    with ThreadPoolExecutor(SLOTS) as holders:
        held = [holders.submit(raw_call, channel, held_upload(video, release)) for channel in channels]
        assert wait_until(lambda: server.running.run_slots.active == SLOTS)

        def refusals(_: int) -> list[float]:
            latencies = []
            for _ in range(REFUSALS_PER_CALLER):
                started = time.perf_counter()
                try:
                    list(server.client.upload_and_run(video_path, "frame_stats_v1", timeout=10))
                except ResourceExhausted as error:
                    assert error.reason == "TOO_MANY_RUNS"
                    assert error.retry_after is not None
                    latencies.append(time.perf_counter() - started)
            return latencies

        alone = refusals(0)  # one caller at a time: the refusal itself
        with ThreadPoolExecutor(EXCESS_CALLERS) as callers:  # a crowd: queueing for 2 cores shows
            latencies = [s for batch in callers.map(refusals, range(EXCESS_CALLERS)) for s in batch]
        release.set()
        outcomes = [future.result(timeout=30) for future in held]
    for channel in channels:
        channel.close()

    # Every excess call was refused, none queued behind the held ones.
    assert len(alone) == REFUSALS_PER_CALLER
    assert len(latencies) == EXCESS_CALLERS * REFUSALS_PER_CALLER
    print(f"refusal latency, one caller: median {statistics.median(alone) * 1e3:.1f} ms")
    # Loose bounds, for a shared CI machine: a refusal that waited for a slot would take the
    # holders' 30 s; what the refusal costs on a quiet machine is printed above and below.
    assert statistics.median(alone) < 0.5
    latencies.sort()
    median, p95, worst = statistics.median(latencies), latencies[int(len(latencies) * 0.95)], latencies[-1]
    print(f"refusal latency over {len(latencies)} calls: median {median * 1e3:.1f} ms, "
          f"p95 {p95 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms")
    assert median < 1.0
    assert worst < 5.0
    # The held uploads then ran to the end.
    assert [o.code for o in outcomes] == [grpc.StatusCode.OK] * SLOTS
    assert all(o.frames == list(range(20)) for o in outcomes)
    assert wait_until(lambda: server.running.run_slots.active == 0)
    assert server.leftover_uploads() == []


def test_hundreds_of_runs_leave_no_descriptors_threads_or_memory_behind(
    make_server: ServerFactory, make_video
) -> None:
    server = make_server(max_concurrent_runs=RUN_THREADS)
    video = make_video(5)

    def run_once(_: int) -> int:
        events = list(server.client.upload_and_run(video, "frame_stats_v1", RunOptions(), timeout=30))
        assert isinstance(events[-1], RunSummary)
        return sum(isinstance(e, FrameResult) for e in events)

    with ThreadPoolExecutor(RUN_THREADS) as pool:
        assert list(pool.map(run_once, range(40))) == [5] * 40  # warm up: gRPC threads, caches, arenas
        baseline = Resources.now()
        rss_before = rss_bytes()
        started = time.perf_counter()
        frames = list(pool.map(run_once, range(RUNS)))
        elapsed = time.perf_counter() - started
    after = baseline.settled_back(fd_slack=2, thread_slack=1)
    rss_growth = rss_bytes() - rss_before
    print(f"{RUNS} runs in {elapsed:.1f} s ({RUNS / elapsed:.0f} runs/s); fds {baseline.fds} -> {after.fds}, "
          f"threads {baseline.threads} -> {after.threads}, rss {rss_growth / 1e6:+.1f} MB")

    assert frames == [5] * RUNS
    assert after.fds <= baseline.fds + 2
    assert after.threads <= baseline.threads + 1
    assert rss_growth < 20 * 1024 * 1024
    assert server.leftover_uploads() == []
