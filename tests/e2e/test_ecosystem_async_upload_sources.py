"""The asyncio client uploading an async iterable of chunks (a request body in FastAPI, aiohttp
or httpx) to a real server: read in the event loop as the upload goes, its end, its failure
and a cancel while it waits all as a caller would expect."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import ServerFactory, ServerHarness
from test_ecosystem_async_client import cancelled_once_uploading

from fakes.waiting import wait_until
from videodag_client import AsyncVideodagClient, FrameResult, Job, JobState, RunOptions, RunSummary

_OPTIONS = RunOptions(frame_stride=10)


async def _body(video: bytes, piece: int = 10_000) -> AsyncIterator[bytes]:
    """A request body as a web framework streams it: small pieces, each after an await."""
    for offset in range(0, len(video), piece):
        await asyncio.sleep(0)
        yield video[offset:offset + piece]


def _frames(events: list[object]) -> list[tuple[int, object]]:
    return [(event.frame_index, event.result) for event in events if isinstance(event, FrameResult)]


def test_a_run_on_an_async_body_gives_the_results_of_the_file(server: ServerHarness, sample_clip: Path) -> None:
    async def scenario() -> list[object]:
        async with AsyncVideodagClient(server.target, timeout=60) as client:
            return [event async for event in client.upload_and_run(_body(sample_clip.read_bytes()), "frame_stats_v1",
                                                                   _OPTIONS)]

    events = asyncio.run(scenario())
    expected = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", _OPTIONS))
    assert _frames(events) == _frames(expected) and len(_frames(events)) == 12
    assert isinstance(events[-1], RunSummary)
    assert server.leftover_uploads() == []


def test_a_job_submitted_from_an_async_body_runs(make_server: ServerFactory, sample_clip: Path, tmp_path: Path) -> None:
    server = make_server(data_dir=tmp_path / "jobs")

    async def scenario() -> list[object]:
        async with AsyncVideodagClient(server.target, timeout=60) as client:
            job = await client.submit_job(_body(sample_clip.read_bytes()), "frame_stats_v1", _OPTIONS)
            return [event async for event in client.watch_job(job.id)]

    events = asyncio.run(scenario())
    final = events[-1]
    assert isinstance(final, Job) and final.state is JobState.SUCCEEDED, final
    assert len(_frames(events)) == 12


def test_a_body_that_fails_raises_its_own_error_and_leaves_nothing(server: ServerHarness, sample_clip: Path) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield sample_clip.read_bytes()[:50_000]
        raise ConnectionResetError("the browser went away")

    async def scenario() -> None:
        async with AsyncVideodagClient(server.target, timeout=60) as client:
            async for _ in client.upload_and_run(failing(), "frame_stats_v1"):
                pass

    with pytest.raises(ConnectionResetError, match="the browser went away"):
        asyncio.run(scenario())
    assert server.uploads_left_after() == []


def test_cancelling_a_run_whose_body_waits_stops_the_wait_and_the_upload(
    server: ServerHarness, sample_clip: Path
) -> None:
    """gRPC's thread waits on the loop for the body's next piece: a cancel must end that wait (the
    body's step is cancelled), or the thread waited for good on a body that never ends."""
    async def scenario() -> tuple[list[Path], bool]:
        never = asyncio.Event()
        body_stopped = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            try:
                yield sample_clip.read_bytes()[:50_000]
                await never.wait()
                yield b""
            finally:
                body_stopped.set()

        async with AsyncVideodagClient(server.target, timeout=60) as client:
            async def consume() -> None:
                async for _ in client.upload_and_run(stalled(), "frame_stats_v1"):
                    pass

            uploading = await cancelled_once_uploading(server, consume)
            stopped = await asyncio.wait_for(body_stopped.wait(), timeout=10) or body_stopped.is_set()
            return uploading, stopped

    uploading, stopped = asyncio.run(scenario())
    assert uploading, "the upload had not started when it was cancelled"
    assert stopped
    assert server.uploads_left_after() == []
    assert wait_until(lambda: _threads_pulling_a_body() == []), _threads_pulling_a_body()


def _threads_pulling_a_body() -> list[str]:
    """The threads waiting in the client's pull of an async body's next piece."""
    frames = sys._current_frames()
    return [thread.name for thread in threading.enumerate()
            if thread.ident in frames and any(frame.f_code.co_filename.endswith("_async_sources.py")
                                              for frame, _ in traceback.walk_stack(frames[thread.ident]))]
