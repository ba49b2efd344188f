"""Ctrl-C in a program using the client, while a call waits, with the call's objects kept alive.

An interactive session (python -i, IPython, Jupyter) keeps the last traceback, and with it the
stream or submission the interrupted code held: the call must end at the interrupt, not when
those objects are collected.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness import ServerHarness

from fakes.waiting import wait_until
from videodag_client import FrameResult, JobState, RunSummary


@contextmanager
def ctrl_c_once(condition: Callable[[], bool]) -> Iterator[None]:
    """SIGINT to the main thread (Python raises KeyboardInterrupt there) once `condition()` holds."""
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main, "the interrupted code must run in the main thread"
    stop = threading.Event()

    def press() -> None:
        if wait_until(lambda: stop.is_set() or condition(), timeout=30) and not stop.is_set():
            signal.pthread_kill(main, signal.SIGINT)

    # Python's own handler, which raises KeyboardInterrupt: a test before may have left another
    # (the CLI's, which exits 130) installed.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=press, name="ctrl-c")
    presser.start()
    try:
        yield
    finally:
        stop.set()
        presser.join()
        signal.signal(signal.SIGINT, handler)


def test_ctrl_c_while_a_run_waits_for_its_next_frame_cancels_the_run(server: ServerHarness, make_video) -> None:
    stream = server.client.upload_and_run(make_video(200), "slow")
    first = next(stream)
    seen = [first]
    with pytest.raises(KeyboardInterrupt) as interrupted, ctrl_c_once(lambda: len(seen) >= 3):
        for event in stream:
            seen.append(event)
    assert interrupted.value is not None  # held, as an interactive session holds its last traceback
    assert server.frames_when_the_run_stopped() < 100
    assert server.uploads_left_after() == []
    assert list(stream) == []  # the call is over


def test_ctrl_c_while_a_job_upload_from_a_pipe_waits_queues_no_job(server: ServerHarness, sample_clip: Path) -> None:
    """From a pipe the server cannot know the video's size: ending the upload at the interrupt
    without cancelling the call would queue a job of the bytes sent so far."""
    video = sample_clip.read_bytes()
    read_end, write_end = os.pipe()
    interrupted_once = threading.Event()

    def write_half_then_wait() -> None:  # the producer of the pipe, stalled halfway through
        with os.fdopen(write_end, "wb") as writer:
            writer.write(video[: len(video) // 2])
            writer.flush()
            interrupted_once.wait(30)

    def half_is_in() -> bool:
        return sum(path.stat().st_size for path in server.leftover_uploads()) >= len(video) // 4

    producer = threading.Thread(target=write_half_then_wait)
    producer.start()
    # Closed once the producer has ended: closing a file while gRPC's thread is blocked reading
    # it waits for that read.
    source = os.fdopen(read_end, "rb")
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted, ctrl_c_once(half_is_in):
            server.client.submit_job(source, "frame_stats_v1", checksum=False)
        assert interrupted.value is not None  # held, as an interactive session holds its last traceback
    finally:
        interrupted_once.set()
        producer.join()
        source.close()
    assert server.uploads_left_after() == []
    assert not server.client.list_jobs().jobs


def test_ctrl_c_while_a_watch_waits_ends_the_watch(server: ServerHarness, sample_clip: Path) -> None:
    job = server.client.submit_job(sample_clip, "slow")
    watch = server.client.watch_job(job.id)
    frames: list[FrameResult] = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_once(lambda: len(frames) >= 2):
        for event in watch:
            if isinstance(event, FrameResult):
                frames.append(event)
    assert list(watch) == []  # ended with the interrupt, not left waiting on the server
    finished = server.client.cancel_job(job.id)
    assert finished.state in (JobState.CANCELLED, JobState.SUCCEEDED)


def test_a_run_read_to_its_end_is_not_affected(server: ServerHarness, make_video) -> None:
    events = list(server.client.upload_and_run(make_video(5), "slow"))
    assert isinstance(events[-1], RunSummary)
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 1, 2, 3, 4]
