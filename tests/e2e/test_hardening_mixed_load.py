"""Mixed load with clients that vanish: whole runs, runs closed early, bad inputs and jobs at
once, while client processes are killed mid-upload and mid-run. Each kind is tested alone
elsewhere; here they share the server, so a slot, file or process that one path leaves behind
under contention shows. Afterwards the server holds nothing for any of them: no run slot,
temp file, job video or decoder process, no descriptor or thread beyond its pools, no job
for a submission killed mid-upload, and it still serves."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from hardening_support import (
    Resources,
    assert_still_serving,
    decoder_processes,
    settled_threads,
    threads_but_rpc_workers,
    wait_until,
)
from harness import ServerHarness

from fakes.media import garbage_bytes
from videodag_client import (
    FrameResult,
    InvalidArgument,
    Job,
    JobState,
    NotFound,
    ResourceExhausted,
    RunOptions,
    RunSummary,
    VideodagClient,
)

CALLER_THREADS = 4
OPERATIONS_PER_CALLER = 10
FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# A client process that says when it has reached the point to be killed at, then keeps going:
# "uploading" once its first chunk is read (the rest trickle, so the kill lands mid-upload),
# "frame" at each result of a run. Refused because every run slot is taken, it tries again.
_CLIENT_PROCESS = """
import io, sys, time
from videodag_client import FrameResult, ResourceExhausted, VideodagClient

target, video, mode = sys.argv[1:4]

class Trickle(io.RawIOBase):
    def __init__(self, path):
        self._file = open(path, "rb")
        self._reads = 0
    def readable(self):
        return True
    def readinto(self, buffer):
        if self._reads == 1:
            print("uploading", flush=True)
        elif self._reads > 1:
            time.sleep(0.2)
        self._reads += 1
        return self._file.readinto(memoryview(buffer)[: 16 * 1024])

def call(client):
    if mode == "run":
        for event in client.upload_and_run(video, "frame_stats_v1"):
            if isinstance(event, FrameResult):
                print("frame", flush=True)
    elif mode == "upload":
        for _ in client.upload_and_run(Trickle(video), "frame_stats_v1", checksum=False):
            pass
    else:
        client.submit_job(Trickle(video), "frame_stats_v1", checksum=False)

with VideodagClient(target) as client:
    while True:
        try:
            call(client)
            break
        except ResourceExhausted:  # every run slot taken by the other callers: try again
            time.sleep(0.05)
"""


def kill_client_at(target: str, video: Path, mode: str, marker: str) -> None:
    """Start a client process and SIGKILL it as soon as it prints `marker`: no goodbye, no cancel."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CLIENT_PROCESS, target, str(video), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate(timeout=30)
    assert line == marker, f"client process said {line!r} instead of {marker!r}; stderr: {errors}"
    assert process.returncode == -signal.SIGKILL


class MixedCaller:
    """One client making a seeded random series of calls; records anything not in the contract."""

    def __init__(self, target: str, seed: int, small: Path, long: Path, garbage: Path, cut: Path) -> None:
        self._target = target
        self._random = random.Random(seed)
        self._small, self._long, self._garbage, self._cut = small, long, garbage, cut
        self.done: list[str] = []

    def run(self, operations: int) -> list[str]:
        actions: dict[str, Callable[[VideodagClient], None]] = {
            "whole run": self.whole_run,
            "closed early": self.closed_early,
            "bad input": self.bad_input,
            "job": self.job,
        }
        with VideodagClient(self._target) as client:
            for _ in range(operations):
                name = self._random.choice(sorted(actions))
                try:
                    actions[name](client)
                except ResourceExhausted:  # every run slot taken: a typed refusal, retried by callers
                    name += " (refused: slots full)"
                self.done.append(name)
        return self.done

    def whole_run(self, client: VideodagClient) -> None:
        options = self._random.choice([RunOptions(), RunOptions(frame_stride=3), RunOptions(max_frames=4)])
        events = list(client.upload_and_run(self._small, "frame_stats_v1", options,
                                            decode_during_upload=self._random.random() < 0.3, timeout=60))
        summary = events[-1]
        assert isinstance(summary, RunSummary)
        assert summary.frames_processed == sum(isinstance(event, FrameResult) for event in events)

    def closed_early(self, client: VideodagClient) -> None:
        stop_after = self._random.randint(0, 6)
        with closing(client.upload_and_run(self._long, "frame_stats_v1", timeout=60)) as stream:
            for seen, _ in enumerate(stream):
                if seen >= stop_after:
                    break

    def bad_input(self, client: VideodagClient) -> None:
        case = self._random.choice(["unknown pipeline", "not a video", "cut short", "bad option"])
        if case == "unknown pipeline":
            with pytest.raises(NotFound):
                list(client.upload_and_run(self._small, "no_such_pipeline", timeout=60))
        elif case == "not a video":
            with pytest.raises(InvalidArgument):
                list(client.upload_and_run(self._garbage, "frame_stats_v1", timeout=60))
        elif case == "bad option":
            with pytest.raises(InvalidArgument):
                list(client.upload_and_run(self._small, "frame_stats_v1", RunOptions(frame_stride=-2), timeout=60))
        else:  # the frames that are there, then a summary saying the video ended early, or refused whole
            try:
                events = list(client.upload_and_run(self._cut, "frame_stats_v1", timeout=60))
            except InvalidArgument:
                return
            assert isinstance(events[-1], RunSummary) and events[-1].ended_early

    def job(self, client: VideodagClient) -> None:
        job = client.submit_job(self._small, "frame_stats_v1")
        if self._random.random() < 0.4:
            client.cancel_job(job.id)
        with closing(client.watch_job(job.id)) as watch:
            last = list(watch)[-1]
        assert isinstance(last, Job) and last.state in FINAL_JOB_STATES
        client.delete_job(job.id)


@pytest.fixture
def videos(tmp_path: Path, make_video, thousand_frame_video: Path) -> dict[str, Path]:
    small = make_video(12)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(garbage_bytes(200_000))
    long_bytes = thousand_frame_video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(long_bytes[: len(long_bytes) // 3])
    return {"small": small, "long": thousand_frame_video, "garbage": garbage, "cut": cut}


def _stored_job_videos(server: ServerHarness) -> list[Path]:
    folder = server.running.settings.data_dir / "uploads"
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []


def _killed_clients(target: str, videos: dict[str, Path]) -> Iterator[str]:
    """Client processes killed mid-run, mid-upload and mid-submission, one after another."""
    for mode, video, marker in [("run", videos["long"], "frame"), ("upload", videos["long"], "uploading"),
                                ("submit", videos["long"], "uploading")] * 2:
        kill_client_at(target, video, mode, marker)
        yield f"client killed: {mode}"


def test_mixed_load_with_killed_clients_leaves_nothing_behind(
    make_server: Callable[..., ServerHarness], videos: dict[str, Path]
) -> None:
    server = make_server(max_concurrent_runs=CALLER_THREADS, job_workers=2)
    warm_up = MixedCaller(server.target, 0, videos["small"], videos["long"], videos["garbage"], videos["cut"])
    for action in (warm_up.whole_run, warm_up.closed_early, warm_up.job):
        with VideodagClient(server.target) as client:
            action(client)
    assert wait_until(lambda: server.running.run_slots.active == 0)
    baseline = Resources.now()
    threads_before = settled_threads()

    callers = [MixedCaller(server.target, seed, videos["small"], videos["long"], videos["garbage"], videos["cut"])
               for seed in range(1, CALLER_THREADS + 1)]
    killed: list[str] = []
    killer = threading.Thread(target=lambda: killed.extend(_killed_clients(server.target, videos)))
    killer.start()
    with ThreadPoolExecutor(CALLER_THREADS) as pool:
        done = [name for names in pool.map(lambda c: c.run(OPERATIONS_PER_CALLER), callers) for name in names]
    killer.join(120)
    assert not killer.is_alive()
    print(f"{len(done)} calls ({sorted(set(done))}), {len(killed)} clients killed")
    assert len(done) == CALLER_THREADS * OPERATIONS_PER_CALLER
    assert len(killed) == 6

    # The callers deleted their jobs, and a submission killed mid-upload never became one.
    assert list(server.client.iter_jobs()) == []
    assert wait_until(lambda: server.running.run_slots.active == 0, timeout=30)
    assert server.uploads_left_after(30) == []
    assert wait_until(lambda: _stored_job_videos(server) == [], timeout=30), _stored_job_videos(server)
    assert wait_until(lambda: decoder_processes() == [], timeout=30), decoder_processes()
    after = baseline.settled_back(fd_slack=2, thread_slack=CALLER_THREADS + 4, timeout=30)
    assert after.fds <= baseline.fds + 2
    assert wait_until(lambda: threads_but_rpc_workers() == threads_before, timeout=30), (
        f"threads before {threads_before}, after {threads_but_rpc_workers()}"
    )
    assert_still_serving(server, videos["small"])
