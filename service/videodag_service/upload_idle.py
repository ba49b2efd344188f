"""An upload that sends nothing for too long ends its call (`UploadIdle`), freeing what it holds.

A client that opens UploadAndRun or SubmitJob and then stops sending would otherwise keep a
run slot, a thread and a temp file for as long as its connection lives: keepalive finds dead
peers, not silent ones, so a handful of such clients could refuse every other caller.

gRPC's blocking API cannot give up on a wait for the client's next message, so
`store_watching_idle` runs the whole store (reading each chunk and writing it) on a thread of
its own while the call's thread watches the chunks arrive (`idle_watch`). Once the limit
passes, the call's thread raises `UploadIdle`, its status ends the call, and the storing
thread, woken by that end, stops with the same error instead of taking the cut-off stream for
a whole upload. `WatchedChunks` is the piece a watchdog of its own uses when the call's thread
is busy streaming results (`BackgroundUpload`).

A client that trickles (a byte a second) is no silent one, and would hold what it holds as
long: with a minimum rate, a chunk does not restore the whole limit by itself. The limit is
a credit of waiting time that each byte adds to (1/rate s, up to the limit), so a client
sending slower than the rate, in chunks of any size, runs it down; one sending faster never does.

The limit covers a call's first message too (`first_message_watching_idle`): a stream that
never sends its config would otherwise hold its thread for as long as its connection lives,
and enough of them would leave no thread for any other call, health checks included. It
stops once the stream has ended: what follows (checking and storing a complete upload) is
the server's work, and a client whose bytes all arrived must never be told it was silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sized
from typing import TypeVar, cast

from videodag_service.errors import ErrorDetails, UploadIdle
from videodag_service.idle_watch import WatchedItems, run_watching_idle
from videodag_service.wording import plain_number

T = TypeVar("T")
Item = TypeVar("Item")
SILENT_UPLOAD = "the upload sent no bytes"
SILENT_START = "the call sent no config message"
STORE_THREAD_NAME = "videodag-upload"


class WatchedChunks(WatchedItems[Item]):
    """The call's chunks (or messages), noting when each arrives. Once `expire()`d, the next
    step raises `UploadIdle`, also in place of the end of stream the abandoned call then
    reaches. `silence` says what the client failed to send, for the error's message."""

    def __init__(self, chunks: Iterator[Item], idle_seconds: float, silence: str = SILENT_UPLOAD, *,
                 min_bytes_per_second: float = 0.0) -> None:
        super().__init__(chunks, idle_seconds)
        self.min_bytes_per_second = min_bytes_per_second
        self._silence = silence
        self._short_bytes = 0
        """Bytes sent since the credit was last whole, for the refusal's message."""
        self._short_seconds = 0.0

    def _credit_after(self, item: Item, waited: float) -> float:
        """With a minimum rate, a chunk buys 1/rate s a byte (at most the limit's worth), so a client
        sending slower than the rate runs its credit down however often it sends."""
        if self.min_bytes_per_second <= 0:
            return self.idle_seconds
        size = len(cast(Sized, item))
        credit = min(self.idle_seconds, self._credit - waited + size / self.min_bytes_per_second)
        whole = credit >= self.idle_seconds
        self._short_bytes = 0 if whole else self._short_bytes + size
        self._short_seconds = 0.0 if whole else self._short_seconds + waited
        return credit

    def _expiry_error(self) -> UploadIdle:
        metadata = {"upload_idle_timeout_seconds": plain_number(self.idle_seconds)}
        if self._short_bytes:
            metadata["upload_min_bytes_per_second"] = plain_number(self.min_bytes_per_second)
            waiting_since = self._waiting_since
            seconds = self._short_seconds + (0.0 if waiting_since is None else time.monotonic() - waiting_since)
            message = (f"the upload sent {self._short_bytes} bytes in {seconds:.0f} s, under the server's minimum "
                       f"of {plain_number(self.min_bytes_per_second)} bytes a second; the call was ended")
        else:
            message = f"{self._silence} for {plain_number(self.idle_seconds)} s, the server's limit; the call was ended"
        return UploadIdle(message, ErrorDetails(metadata=metadata))


def store_watching_idle(
    store: Callable[[Iterator[Item]], T], chunks: Iterator[Item], idle_seconds: float, silence: str = SILENT_UPLOAD,
    *, min_bytes_per_second: float = 0.0, thread_name: str = STORE_THREAD_NAME,
) -> T:
    """`store(chunks)`, run on a thread of its own while this thread waits for it; raises
    `UploadIdle` here once no chunk has arrived for `idle_seconds` (0: no limit, and `store`
    runs here), or, with `min_bytes_per_second`, once the client has waited that long in all
    without sending the bytes that rate asks of it, unless the chunks have ended by then.
    `store` must keep nothing it needs after an error: it may still be running when this
    returns, until the call's end wakes it. `thread_name` says what the thread waits for, in
    thread dumps."""
    if idle_seconds <= 0:
        return store(chunks)
    watched = WatchedChunks(chunks, idle_seconds, silence, min_bytes_per_second=min_bytes_per_second)
    return run_watching_idle(store, watched, thread_name)


def first_message_watching_idle(read_first: Callable[[Iterator[Item]], T], requests: Iterator[Item],
                                idle_seconds: float) -> T:
    """`read_first(requests)` (which takes the stream's first message), given up with
    `UploadIdle` when that message does not come within `idle_seconds` (0: no limit)."""
    return store_watching_idle(read_first, requests, idle_seconds, SILENT_START)
