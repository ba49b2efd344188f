"""The asyncio client against a real server on loopback: the blocking client's events and
errors, an event loop that keeps running, and cancellation that reaches the server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from harness import ServerFactory, ServerHarness

from videodag_client import (
    AsyncRunStream,
    AsyncVideodagClient,
    Cancelled,
    FailedPrecondition,
    FrameResult,
    Job,
    JobState,
    NotFound,
    ResourceExhausted,
    RunOptions,
    RunSummary,
    UploadReceived,
    VideodagClient,
    VideodagError,
    VideoOpened,
)

T = TypeVar("T")


def run_async(server: ServerHarness, scenario: Callable[[AsyncVideodagClient], Awaitable[T]]) -> T:
    """Runs `scenario` with a client of its own in a fresh event loop, as an asyncio service would."""

    async def main() -> T:
        async with AsyncVideodagClient(server.target, timeout=60) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_a_client_around_a_channel_the_caller_built(server: ServerHarness) -> None:
    channel = grpc.insecure_channel(server.target)

    async def scenario() -> list[str]:
        async with AsyncVideodagClient.from_client(VideodagClient.from_channel(channel)) as client:
            return [pipeline.id for pipeline in await client.list_pipelines()]

    try:
        assert "slow" in asyncio.run(scenario())
    finally:
        channel.close()


def _comparable(event: object) -> object:
    """An event without what differs from one run to the next (times)."""
    if isinstance(event, RunSummary):
        return (event.frames_processed, event.frames_in_video, event.ended_early)
    return event


def test_a_run_gives_the_same_events_as_the_blocking_client(server: ServerHarness, sample_clip: Path) -> None:
    options = RunOptions(frame_stride=10)

    async def scenario(client: AsyncVideodagClient) -> list[object]:
        return [event async for event in client.upload_and_run(sample_clip, "frame_stats_v1", options)]

    events = run_async(server, scenario)
    expected = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", options))
    assert [type(event) for event in events] == (
        [UploadReceived, VideoOpened] + [FrameResult] * 12 + [RunSummary]
    )
    assert [_comparable(event) for event in events] == [_comparable(event) for event in expected]
    assert server.leftover_uploads() == []


@pytest.mark.parametrize("chunk_size", [16 * 1024, 256 * 1024])
def test_a_call_the_server_refuses_while_the_upload_runs_raises_the_servers_error(
    server: ServerHarness, sample_clip: Path, chunk_size: int
) -> None:
    # The server refuses the config at once, while the client still has chunks to send.
    async def scenario(client: AsyncVideodagClient) -> None:
        async for _ in client.upload_and_run(sample_clip, "no_such_pipeline", chunk_size=chunk_size):
            pass

    with pytest.raises(NotFound, match="unknown pipeline 'no_such_pipeline'") as raised:
        run_async(server, scenario)
    assert raised.value.reason == "PIPELINE_NOT_FOUND"
    assert server.uploads_left_after() == []


def test_an_upload_over_the_limit_raises_resource_exhausted_mid_stream(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    server = make_server(max_upload_bytes=200_000)

    async def scenario(client: AsyncVideodagClient) -> None:
        # Undeclared size: the limit is found as the bytes arrive, not from the config.
        async for _ in client.upload_and_run(sample_clip, "frame_stats_v1", declare_size=False, chunk_size=32 * 1024):
            pass

    with pytest.raises(ResourceExhausted) as raised:
        run_async(server, scenario)
    assert raised.value.reason == "UPLOAD_TOO_LARGE"
    assert server.uploads_left_after() == []


def test_the_event_loop_keeps_running_while_a_run_streams(server: ServerHarness, make_video) -> None:
    video = make_video(30)  # the "slow" pipeline takes 50 ms a frame: 1.5 s

    async def scenario(client: AsyncVideodagClient) -> tuple[int, int]:
        ticks = 0
        running = True

        async def tick() -> None:
            nonlocal ticks
            while running:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        frames = [event async for event in client.upload_and_run(video, "slow") if isinstance(event, FrameResult)]
        running = False
        await ticker
        return len(frames), ticks

    frames, ticks = run_async(server, scenario)
    assert frames == 30
    # 1.5 s of 10 ms sleeps: a loop blocked by the run would have ticked a handful of times.
    assert ticks > 40


def test_runs_at_once_in_one_loop_each_get_their_own_results(make_server: ServerFactory, make_video) -> None:
    server = make_server(max_concurrent_runs=12)
    videos = [make_video(count) for count in range(3, 13)]  # more runs than the client's call threads

    async def scenario(client: AsyncVideodagClient) -> list[list[int]]:
        async def indices(video: Path) -> list[int]:
            stream = client.upload_and_run(video, "slow")
            return [event.frame_index async for event in stream if isinstance(event, FrameResult)]

        return await asyncio.gather(*(indices(video) for video in videos))

    results = run_async(server, scenario)
    assert results == [list(range(count)) for count in range(3, 13)]


def test_cancelling_the_awaiting_task_cancels_the_run_on_the_server(server: ServerHarness, make_video) -> None:
    video = make_video(200)  # 10 s of "slow" frames: far from done when cancelled

    async def scenario(client: AsyncVideodagClient) -> int:
        seen = 0
        first_frame = asyncio.Event()

        async def consume() -> None:
            nonlocal seen
            async for event in client.upload_and_run(video, "slow"):
                if isinstance(event, FrameResult):
                    seen += 1
                    first_frame.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first_frame.wait(), timeout=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    seen = run_async(server, scenario)
    assert 0 < seen < 200
    # The server's run ends (its pipeline run is closed) and processes no frame after that.
    assert server.frames_when_the_run_stopped() < 200
    assert server.uploads_left_after() == []


def test_leaving_the_streams_block_early_cancels_the_run(server: ServerHarness, make_video) -> None:
    video = make_video(200)

    async def scenario(client: AsyncVideodagClient) -> list[int]:
        indices = []
        async with client.upload_and_run(video, "slow") as stream:
            async for event in stream:
                if isinstance(event, FrameResult):
                    indices.append(event.frame_index)
                    if len(indices) == 3:
                        break
        # A closed stream ends at once.
        assert [event async for event in stream] == []
        return indices

    assert run_async(server, scenario) == [0, 1, 2]
    assert server.uploads_left_after() == []


def test_upload_progress_is_reported_in_the_event_loop(server: ServerHarness, sample_clip: Path) -> None:
    size = sample_clip.stat().st_size
    reports: list[tuple[int, int | None, bool]] = []

    async def scenario(client: AsyncVideodagClient) -> None:
        loop_thread = threading.get_ident()

        def progress(sent: int, total: int | None) -> None:
            reports.append((sent, total, threading.get_ident() == loop_thread))

        async for _ in client.upload_and_run(
            sample_clip, "frame_stats_v1", RunOptions(max_frames=1), chunk_size=128 * 1024,
            on_upload_progress=progress,
        ):
            pass

    run_async(server, scenario)
    assert reports and all(in_loop for _, _, in_loop in reports)
    assert [sent for sent, _, _ in reports] == sorted(sent for sent, _, _ in reports)
    assert reports[-1][:2] == (size, size)


class _FailingFile(io.RawIOBase):
    """A readable file whose disk goes away after its first bytes."""

    def __init__(self) -> None:
        self._reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._reads += 1
        if self._reads > 2:
            raise OSError("the disk went away")
        buffer[:1000] = b"\0" * 1000
        return 1000


def test_a_file_that_fails_to_read_raises_its_own_error(server: ServerHarness) -> None:
    async def scenario(client: AsyncVideodagClient) -> None:
        async for _ in client.upload_and_run(_FailingFile(), "frame_stats_v1", chunk_size=1000):
            pass

    with pytest.raises(OSError, match="the disk went away"):
        run_async(server, scenario)
    assert server.uploads_left_after() == []


def test_a_job_is_submitted_watched_listed_and_deleted(server: ServerHarness, make_video) -> None:
    video = make_video(6)

    async def scenario(client: AsyncVideodagClient) -> tuple[Job, list[object], list[str], Job]:
        job = await client.submit_job(video, "frame_stats_v1", RunOptions(frame_stride=2))
        async with client.watch_job(job.id) as watch:
            assert (watch.last_frame_index, watch.job, watch.reconnects) == (None, None, 0), "not started yet"
            events = [event async for event in watch]
        # As the blocking watch has them: a caller resuming a watch needs its last frame.
        assert (watch.last_frame_index, watch.job, watch.reconnects) == (4, events[-1], 0)
        listed = [listed.id for listed in (await client.list_jobs(states=[JobState.SUCCEEDED])).jobs]
        fetched = await client.get_job(job.id)
        await client.delete_job(job.id)
        with pytest.raises(NotFound):
            await client.get_job(job.id)
        return job, events, listed, fetched

    job, events, listed, fetched = run_async(server, scenario)
    assert job.state is JobState.QUEUED
    assert [event.frame_index for event in events if isinstance(event, FrameResult)] == [0, 2, 4]
    final = events[-1]
    assert isinstance(final, Job) and final.state is JobState.SUCCEEDED
    assert listed == [job.id] and fetched.summary == final.summary
    assert final.summary is not None and final.summary.frames_in_video == 6


class _SlowFile(io.RawIOBase):
    """A readable file that gives 4 KiB every 20 ms and never ends."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        time.sleep(0.02)
        buffer[:4096] = b"\0" * 4096
        return 4096


async def cancelled_once_uploading(server: ServerHarness, consume: Callable[[], Awaitable[None]]) -> list[Path]:
    """Runs `consume` as a task, cancels it once `server` is receiving its upload (up to 10 s)
    and waits for its cancel; the uploads the server was receiving then."""
    task = asyncio.create_task(consume())
    uploading: list[Path] = []
    for _ in range(500):
        if uploading := server.leftover_uploads():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return uploading


def test_cancelling_a_run_while_its_upload_arrives_stops_the_upload(server: ServerHarness) -> None:
    async def scenario(client: AsyncVideodagClient) -> tuple[list[Path], list[Path]]:
        async def consume() -> None:
            async for _ in client.upload_and_run(_SlowFile(), "frame_stats_v1", chunk_size=4096):
                pass

        uploading = await cancelled_once_uploading(server, consume)
        # Checked with the client still open: closing it would cancel every call anyway.
        for _ in range(250):
            if not server.leftover_uploads():
                break
            await asyncio.sleep(0.02)
        return uploading, server.leftover_uploads()

    uploading, left = run_async(server, scenario)
    assert uploading, "the upload had not started when it was cancelled"
    # The slow file never ends: only a cancelled call lets the server remove its upload.
    assert left == []


def test_cancelling_a_job_submission_mid_upload_queues_no_job(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(data_dir=tmp_path / "jobs")
    incoming = tmp_path / "jobs" / "uploads" / "incoming"  # where the server receives a job's upload

    async def scenario(client: AsyncVideodagClient) -> tuple[list[Path], list[Path], list[Job]]:
        submitting = asyncio.create_task(client.submit_job(_SlowFile(), "frame_stats_v1", chunk_size=4096))
        uploading: list[Path] = []
        for _ in range(500):  # until the server is receiving the upload, up to 10 s
            if incoming.exists() and (uploading := sorted(incoming.iterdir())):
                break
            await asyncio.sleep(0.02)
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        # Checked with the client still open: closing it would cancel every call anyway.
        for _ in range(250):
            if not any(incoming.iterdir()):
                break
            await asyncio.sleep(0.02)
        return uploading, sorted(incoming.iterdir()), list((await client.list_jobs()).jobs)

    uploading, left, jobs = run_async(server, scenario)
    assert uploading, "the upload had not started when it was cancelled"
    assert left == [] and jobs == []


def test_uploads_under_way_hold_no_thread_other_calls_need(server: ServerHarness) -> None:
    async def scenario(client: AsyncVideodagClient) -> tuple[list[str], list[bool]]:
        # More unending submissions than the client has threads for its calls: a call
        # answered while they all still run did not wait for one of them to end.
        submissions = [
            asyncio.create_task(client.submit_job(_SlowFile(), "frame_stats_v1", chunk_size=4096)) for _ in range(10)
        ]
        await asyncio.sleep(0.5)
        pipelines = await asyncio.wait_for(client.list_pipelines(), timeout=30)
        still_running = [not submission.done() for submission in submissions]
        for submission in submissions:
            submission.cancel()
        await asyncio.gather(*submissions, return_exceptions=True)
        return [pipeline.id for pipeline in pipelines], still_running

    pipelines, still_running = run_async(server, scenario)
    assert "slow" in pipelines and all(still_running)


def test_a_step_cut_by_a_timeout_cancels_the_run_and_later_steps_say_so(server: ServerHarness, make_video) -> None:
    """Not a plain stop after the timeout: that would pass for a run that ended, without its summary."""
    video = make_video(200)

    async def scenario(client: AsyncVideodagClient) -> BaseException:
        stream = client.upload_and_run(video, "slow")
        seen = 0
        while seen < 2:
            seen += isinstance(await anext(stream), FrameResult)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 0.001)
        with pytest.raises(Cancelled) as later:
            await anext(stream)
        return later.value

    later = run_async(server, scenario)
    assert "cancelled" in str(later)
    assert server.frames_when_the_run_stopped() < 200
    assert server.uploads_left_after() == []


def test_closing_the_client_ends_its_streams_and_queued_calls_with_client_closed(
    server: ServerHarness, make_video
) -> None:
    """Never asyncio.CancelledError, which gather and TaskGroup take for their own cancellation."""
    video = make_video(200)

    async def scenario() -> tuple[BaseException, list[BaseException]]:
        client = AsyncVideodagClient(server.target, timeout=60)
        stream = client.upload_and_run(video, "slow")
        while not isinstance(await anext(stream), FrameResult):
            pass
        # More one-shot calls than the client has threads: some still wait for one at the close.
        calls = [asyncio.ensure_future(client.list_pipelines()) for _ in range(40)]
        await client.close()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        with pytest.raises(VideodagError) as stream_error:
            await anext(stream)
        return stream_error.value, [outcome for outcome in outcomes if isinstance(outcome, BaseException)]

    stream_error, call_errors = asyncio.run(scenario())
    assert isinstance(stream_error, FailedPrecondition) and stream_error.reason == "CLIENT_CLOSED"
    assert all(isinstance(error, VideodagError) for error in call_errors), call_errors
    assert server.uploads_left_after() == []


def test_upload_progress_callbacks_run_in_the_loop_and_their_errors_stop_the_call(
    server: ServerHarness, sample_clip: Path
) -> None:
    """As with the blocking client: the callback's exception is raised from the call, which stops."""
    reports: list[int] = []

    async def scenario(client: AsyncVideodagClient) -> tuple[BaseException, BaseException, int]:
        async def progress(sent: int, total: int | None) -> None:  # a coroutine function is awaited
            await asyncio.sleep(0)
            reports.append(sent)

        events = [event async for event in client.upload_and_run(
            sample_clip, "frame_stats_v1", RunOptions(max_frames=1), chunk_size=256 * 1024,
            on_upload_progress=progress,
        )]
        assert isinstance(events[-1], RunSummary)

        def failing(sent: int, total: int | None) -> None:
            raise RuntimeError(f"progress display failed at {sent}")

        handed_to_the_loop: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: handed_to_the_loop.append(context))
        with pytest.raises(RuntimeError, match="progress display failed at 262144") as run_error:
            async for _ in client.upload_and_run(sample_clip, "frame_stats_v1", on_upload_progress=failing):
                pass
        with pytest.raises(RuntimeError, match="progress display failed at 262144") as job_error:
            await client.submit_job(sample_clip, "frame_stats_v1", on_upload_progress=failing)
        await asyncio.sleep(0.2)
        # Raised from the call, once: it also went to the loop's handler, logged as a late failure.
        assert handed_to_the_loop == []
        return run_error.value, job_error.value, (await client.list_jobs()).jobs.__len__()

    _, _, jobs = run_async(server, scenario)
    assert reports[-1] == sample_clip.stat().st_size
    assert jobs == 0, "the failed submission queued no job"
    assert server.uploads_left_after() == []


def test_a_report_the_loop_runs_after_the_last_chunk_still_stops_the_submission(
    server: ServerHarness, sample_clip: Path
) -> None:
    """The loop is blocked while the whole file is read: the upload waits for its reports
    before it ends, so the failing one stops it and no job is queued."""

    async def scenario(client: AsyncVideodagClient) -> tuple[BaseException, int]:
        def failing(sent: int, total: int | None) -> None:
            raise RuntimeError(f"progress display failed at {sent}")

        async def block_the_loop() -> None:
            await asyncio.sleep(0)  # the submission's start is handed to a thread
            time.sleep(1.5)  # CPU work that holds the loop; the upload ends in far less

        with pytest.raises(RuntimeError, match="progress display failed at 262144") as error:
            await asyncio.gather(
                client.submit_job(sample_clip, "frame_stats_v1", chunk_size=256 * 1024, on_upload_progress=failing),
                block_the_loop(),
            )
        print("JOBS", (await client.list_jobs()).jobs, repr(error.value), error.traceback[-3:])
        return error.value, len((await client.list_jobs()).jobs)

    _, jobs = run_async(server, scenario)
    assert jobs == 0, "the failed submission queued no job"
    assert server.uploads_left_after() == []


def test_a_slow_last_report_holds_the_upload_no_longer_than_the_coroutine_limit(
    make_server: ServerFactory, sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report's coroutine still running at the limit lets the upload end (waiting on would
    trip the server's idle limit and fail a good submission), and the job is returned: the
    coroutine's later failure goes to the loop's exception handler, not in place of the job."""
    monkeypatch.setattr("videodag_client._loop_callback._COROUTINES_WAIT_SECONDS", 0.3)
    server = make_server(upload_idle_timeout_seconds=1.5)

    async def scenario(client: AsyncVideodagClient) -> tuple[Job, float, list[dict[str, Any]]]:
        handled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: handled.append(context))

        async def slow_display(sent: int, total: int | None) -> None:
            if sent == total:
                await asyncio.sleep(3)
                raise RuntimeError("the display went away")

        started = time.monotonic()
        job = await client.submit_job(sample_clip, "frame_stats_v1", on_upload_progress=slow_display)
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10
        while not handled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return job, seconds, handled

    job, seconds, handled = run_async(server, scenario)
    assert job.state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
    assert seconds < 3, "the call waited for the coroutine"
    assert [(context["message"], str(context["exception"])) for context in handled] == [
        (f"an upload progress callback failed after job {job.id} was queued", "the display went away")
    ]


@pytest.mark.parametrize("ending", ["whole", "aclose", "break"])
def test_a_slow_last_report_holds_the_end_of_a_runs_iteration_no_longer_than_the_coroutine_limit(
    server: ServerHarness, sample_clip: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """After the summary the iteration ends once the limit has passed, not when a coroutine that
    may never end does; its later failure goes to the loop's exception handler, as for a job,
    and so it does when the caller leaves the iteration early (aclose, or a plain break)."""
    monkeypatch.setattr("videodag_client._loop_callback._COROUTINES_WAIT_SECONDS", 0.3)

    async def scenario(client: AsyncVideodagClient) -> tuple[list[str], float, list[dict[str, Any]]]:
        handled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: handled.append(context))

        async def slow_display(sent: int, total: int | None) -> None:
            if sent == total:
                await asyncio.sleep(4)
                raise RuntimeError("the display went away")

        started = time.monotonic()
        kinds: list[str] = []
        stream = client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(max_frames=2),
                                       on_upload_progress=slow_display)
        async for event in stream:
            kinds.append(type(event).__name__)
            if ending != "whole" and len(kinds) == 2:
                break
        if ending == "aclose":
            await stream.aclose()
        del stream
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10
        while not handled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return kinds, seconds, handled

    kinds, seconds, handled = run_async(server, scenario)
    assert kinds[0] == "UploadReceived" and (ending != "whole" or kinds[-1] == "RunSummary")
    assert seconds < 3, "the iteration waited for the coroutine"
    assert [(context["message"], str(context["exception"])) for context in handled] == [
        ("a callback of a finished or closed call failed", "the display went away")
    ]


def test_cancelling_a_submission_whose_upload_waits_for_its_reports_frees_its_file(
    server: ServerHarness, sample_clip: Path
) -> None:
    """The upload's wait for a slow report ends with the call: its thread and the file it opened go."""

    async def scenario(client: AsyncVideodagClient) -> int:
        async def slow_display(sent: int, total: int | None) -> None:
            if sent == total:
                await asyncio.sleep(30)

        submitting = asyncio.ensure_future(client.submit_job(sample_clip, "frame_stats_v1",
                                                             on_upload_progress=slow_display))
        await asyncio.sleep(0.5)  # the whole file is read, the upload waits for its last report
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        deadline = time.monotonic() + 5
        while _open_descriptors_of(sample_clip) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return _open_descriptors_of(sample_clip)

    assert run_async(server, scenario) == 0, "the clip is still open"
    assert server.uploads_left_after() == []


def _open_descriptors_of(path: Path) -> int:
    count = 0
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while listing
            count += os.readlink(f"/proc/self/fd/{descriptor}") == str(path.resolve())
    return count


class _SlowDisk(io.BytesIO):
    """A seekable file whose reads take a while, as from a slow disk: its upload lasts seconds."""

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(0.01)
        return super().read(size)


async def _first_event_of_a_slow_upload(
    target: str, clip: Path, pipeline_id: str, reports: list[int]
) -> tuple[AsyncVideodagClient, AsyncRunStream]:
    """A run decoded as its upload arrives, from a slow disk, after its first event: the upload
    still arrives, and reports its progress to `reports`."""
    client = AsyncVideodagClient(target)
    stream = client.upload_and_run(
        _SlowDisk(clip.read_bytes()), pipeline_id, chunk_size=8 * 1024, decode_during_upload=True,
        on_upload_progress=lambda sent, total: reports.append(sent),
    )
    await anext(stream)
    return client, stream


def test_a_stream_still_uploading_when_its_loop_ends_stops_its_upload(server: ServerHarness, sample_clip: Path) -> None:
    """Its progress callback has no loop left to run in: the upload stops instead of waiting
    for one, and the server frees the call's file (and slot)."""
    kept: list[object] = []  # the stream outlives its loop, never closed
    reports: list[int] = []

    async def main() -> None:
        kept.append(await _first_event_of_a_slow_upload(server.target, sample_clip, "frame_stats_v1", reports))

    asyncio.run(main())
    assert server.uploads_left_after() == []
    assert len(reports) > 0 and reports[-1] < sample_clip.stat().st_size


def test_a_progress_callback_does_not_hold_the_upload_back_on_a_busy_loop(server: ServerHarness) -> None:
    """A loop busy 50 ms between awaits (a web service's) runs the callback late, and the upload
    goes on meanwhile: it does not take a turn of the loop for each of its chunks."""
    chunk_size, chunks = 32 * 1024, 512

    async def scenario(client: AsyncVideodagClient) -> tuple[int, int]:
        reports: list[int] = []
        turns = 0
        stop = asyncio.Event()

        async def busy() -> None:
            nonlocal turns
            while not stop.is_set():
                time.sleep(0.05)  # CPU work between awaits
                turns += 1
                await asyncio.sleep(0)

        worker = asyncio.create_task(busy())
        await asyncio.sleep(0)
        turns_before = turns
        with pytest.raises(VideodagError):  # not a video: refused once uploaded
            async for event in client.upload_and_run(
                io.BytesIO(bytes(chunk_size * chunks)), "frame_stats_v1", chunk_size=chunk_size, checksum=False,
                on_upload_progress=lambda sent, total: reports.append(sent),
            ):
                assert isinstance(event, UploadReceived)
        turns_during = turns - turns_before
        stop.set()
        await worker
        return len(reports), turns_during

    reports, turns = run_async(server, scenario)
    assert reports == chunks, "every report ran in the end"
    assert turns < chunks // 2, f"the upload waited for the loop: {turns} turns for {chunks} chunks"


def test_an_upload_goes_on_while_its_loop_is_stopped(server: ServerHarness, sample_clip: Path) -> None:
    """Its progress reports wait in the stopped loop; the upload does not wait for them."""
    size = sample_clip.stat().st_size
    loop = asyncio.new_event_loop()
    reports: list[int] = []

    # "slow" (50 ms a frame): the run, and its file, outlast the upload. Then the loop stops, left open.
    _, stream = loop.run_until_complete(_first_event_of_a_slow_upload(server.target, sample_clip, "slow", reports))
    try:
        reported = len(reports)
        deadline = time.monotonic() + 30
        while [path.stat().st_size for path in server.leftover_uploads() if path.exists()] != [size]:
            assert time.monotonic() < deadline, "the upload stopped with its loop"
            time.sleep(0.02)
        assert len(reports) == reported, "the reports wait for the loop"
    finally:
        stream.cancel()
        loop.close()
    assert server.uploads_left_after() == []


def test_a_callback_coroutine_that_ends_cancelled_does_not_cancel_the_call(
    server: ServerHarness, sample_clip: Path
) -> None:
    """Its CancelledError is its own: never raised from the stream, where it would read as the task's."""

    async def scenario(client: AsyncVideodagClient) -> list[object]:
        loop = asyncio.get_running_loop()

        async def progress(sent: int, total: int | None) -> None:
            waited: asyncio.Future[None] = loop.create_future()
            loop.call_soon(waited.cancel)
            await waited

        return [event async for event in client.upload_and_run(
            sample_clip, "frame_stats_v1", RunOptions(max_frames=2), chunk_size=64 * 1024, on_upload_progress=progress,
        )]

    events = run_async(server, scenario)
    assert isinstance(events[-1], RunSummary)
