"""An async iterable of a video's chunks (an HTTP request's body in FastAPI, aiohttp or httpx),
uploaded by the async client without reading it whole first.

gRPC pulls the upload's requests on a thread of its own; each pull here runs the iterable's
next step in the event loop it came from and waits for it. The loop is never held: it runs
that step as any other task. A cancelled or failed call stops a pull still waiting (the step
is cancelled in the loop), so no thread waits for good on a body that never ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterable, AsyncIterator

from videodag_client._errors import Cancelled
from videodag_client._upload import PathOrFile, StoppableChunks


def chunks_in_loop(source: PathOrFile | AsyncIterable[bytes]) -> PathOrFile:
    """`source` as the blocking client takes it: an async iterable becomes chunks pulled
    through the running event loop; anything else is left as it is."""
    if isinstance(source, AsyncIterable):
        return LoopChunks(source, asyncio.get_running_loop())
    return source


class LoopChunks(StoppableChunks):
    def __init__(self, source: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._iterator: AsyncIterator[bytes] | None = None
        self._loop = loop
        self._lock = threading.Lock()
        self._stopped = False
        self._pending: concurrent.futures.Future[bytes] | None = None

    def __next__(self) -> bytes:
        with self._lock:
            if self._stopped:
                raise Cancelled("the upload was stopped")
            pending = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop)
            self._pending = pending
        try:
            return pending.result()
        except StopAsyncIteration:
            raise StopIteration from None
        except concurrent.futures.CancelledError:
            raise Cancelled("the upload was stopped") from None
        finally:
            with self._lock:
                self._pending = None

    async def _next_chunk(self) -> bytes:
        if self._iterator is None:  # made in the loop: an async generator's first step belongs there
            self._iterator = aiter(self._source)
        return await anext(self._iterator)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._pending is not None:
                self._pending.cancel()  # cancels the step's task in the loop
