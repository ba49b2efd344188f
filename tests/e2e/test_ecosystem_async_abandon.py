"""The asyncio client's calls given up before their upload began: the checksum pass, a whole
read of the caller's file on a thread, stops, and leaves the file where it was. It read on
for seconds after the caller's cancel or timeout, and seeked back under a retry that was
already reading the same file object: the retry failed UPLOAD_CORRUPTED, or sent other bytes."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from harness import ServerHarness

from videodag_client import AsyncVideodagClient, FailedPrecondition

_BLOCK = 1024 * 1024


class _SlowFile(io.RawIOBase):
    """A seekable 64 MiB file that takes 150 ms a read (a slow share): a checksum pass of 10 s."""

    def __init__(self) -> None:
        self.size = 64 * _BLOCK
        self.position = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        time.sleep(0.15)
        size = min(size if size >= 0 else self.size, self.size - self.position)
        self.position += size
        return b"\0" * size


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def _reads_stop(file: _SlowFile) -> None:
    """By the time the cancelled call returns, the reads have stopped and the file is back where
    it was: a retry with the same file object at once must not meet the pass halfway."""
    reads = file.reads
    assert file.position == 0, "the file is not yet back where the caller had it"
    await asyncio.sleep(0.5)
    assert file.reads == reads, "the checksum pass goes on reading"
    assert file.position == 0


def _run(server: ServerHarness, scenario: Callable[[AsyncVideodagClient, _SlowFile], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncVideodagClient(server.target, timeout=60) as client:
            await scenario(client, _SlowFile())

    asyncio.run(main())


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("call", ["upload_and_run", "submit_job"])
def test_a_call_cancelled_during_its_checksum_pass_stops_reading_the_file(server: ServerHarness, call: str) -> None:
    async def scenario(client: AsyncVideodagClient, file: _SlowFile) -> None:
        if call == "upload_and_run":
            task = asyncio.ensure_future(_drain(client.upload_and_run(file, "frame_stats_v1")))
        else:
            task = asyncio.ensure_future(client.submit_job(file, "frame_stats_v1"))
        await _until(lambda: file.reads >= 3)  # well into the pass, a read under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _reads_stop(file)
        assert (await client.list_jobs()).jobs == (), "no job came of it"

    _run(server, scenario)
    assert server.uploads_left_after() == []


def test_a_call_cut_by_a_timeout_during_its_checksum_pass_stops_reading_the_file(server: ServerHarness) -> None:
    async def scenario(client: AsyncVideodagClient, file: _SlowFile) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.submit_job(file, "frame_stats_v1")
        await _reads_stop(file)

    _run(server, scenario)


def test_closing_the_client_during_a_checksum_pass_ends_the_call_at_once(server: ServerHarness) -> None:
    async def scenario(client: AsyncVideodagClient, file: _SlowFile) -> None:
        stream_file = _SlowFile()
        submitting = asyncio.ensure_future(client.submit_job(file, "frame_stats_v1"))
        running = asyncio.ensure_future(_drain(client.upload_and_run(stream_file, "frame_stats_v1")))
        await _until(lambda: file.reads >= 3 and stream_file.reads >= 3)
        closed_at = time.monotonic()
        await client.close()
        for task in (submitting, running):
            with pytest.raises(FailedPrecondition) as closed:
                await task
            assert closed.value.reason == "CLIENT_CLOSED"
        assert time.monotonic() - closed_at < 1.5, "it waited for the checksum pass to end"
        await _reads_stop(file)
        await _reads_stop(stream_file)

    _run(server, scenario)
