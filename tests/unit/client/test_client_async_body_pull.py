"""The pull of an async body's next piece (`LoopChunks`) from gRPC's request thread, stopped
because the call ended: the stop is the caller's doing, not an error of the upload's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from fakes.waiting import wait_until
from videodag_client._async_sources import LoopChunks
from videodag_client._upload import ChunkedRequests, open_upload


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_a_pull_stopped_as_the_call_ends_leaves_the_calls_own_error_to_be_raised(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A server's refusal (an unknown pipeline, an upload too large) ends the call while gRPC's
    thread waits for the body's next piece; the stream then closes the requests, which stops
    that wait. Kept as the upload's error, the stop's Cancelled("the upload was stopped") was
    raised in place of the server's refusal whenever gRPC's thread got there first."""
    async def body() -> AsyncIterator[bytes]:
        yield b"first piece"
        await asyncio.Event().wait()  # a body whose next piece has not come
        yield b""

    chunks = LoopChunks(body(), loop)
    requests = ChunkedRequests(b"config", lambda chunk: chunk, open_upload(chunks, declare_size=False, checksum=False),
                               1024, None)
    assert next(requests) == b"config"
    pulled: list[object] = []

    def pull() -> None:
        try:
            pulled.append(next(requests))
        except Exception as error:  # gRPC's thread takes any
            pulled.append(error)

    puller = threading.Thread(target=pull)
    puller.start()
    assert wait_until(lambda: chunks._pending is not None)  # waiting on the loop for the next piece
    requests.close()
    puller.join(timeout=10)

    assert not puller.is_alive()
    assert requests.error is None
