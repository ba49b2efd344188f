"""A call whose client takes no result for too long is cancelled, freeing what it holds.

A client that stops reading a server stream (hung, paused in a debugger, a bug that never
iterates) makes gRPC wait in its send once the transport's buffers are full, and the run
waits behind it (back-pressure keeps its memory flat). The call then holds a run slot, a
decoder process and its threads for as long as the connection lives, and a handful of such
clients refuse every other caller, as silent uploads would (`upload_idle`).

While gRPC sends a response, the servicer's generator is suspended at its `yield`, so the
call's own thread cannot notice. One watchdog thread for the whole server looks at every
watched call once a second and cancels (`context.cancel`) those suspended longer than the
limit. gRPC then closes the generator, which ends the run and removes its files as any
cancel does. The client sees CANCELLED once it reads again; the server's log says why.

What is measured is how long one send waits, not the gap between the client's reads: a
client that reads slowly frees the transport's buffers (HTTP/2 flow-control windows) in
batches, so one send may wait for many of its reads, minutes for small results read one a
second with a fixed window. Hence a default of minutes, not seconds.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import grpc

from videodag_service.call_status import abort

logger = logging.getLogger(__name__)

T = TypeVar("T")
WATCHDOG_THREAD_NAME = "videodag-unread-results"
_LONGEST_LOOK_INTERVAL_SECONDS = 1.0


class _WatchedCall:
    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context
        self.log_context = contextvars.copy_context()  # the call's request id, for the log line
        self.sending_since: float | None = None
        self.cancelled = False


class UnreadResultsWatchdog:
    """Watches calls' response streams (`watching`); 0 seconds turns it off."""

    def __init__(self, limit_seconds: float) -> None:
        self.limit_seconds = limit_seconds
        self._calls: set[_WatchedCall] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watching(self, responses: Iterator[T], context: grpc.ServicerContext) -> Iterator[T]:
        """`responses`, as gRPC takes them; the call is cancelled once gRPC has been sending one
        for longer than the limit (the client reads nothing)."""
        if self.limit_seconds <= 0:
            yield from responses
            return
        call = _WatchedCall(context)
        try:
            self._add(call)
        except RuntimeError as error:  # no thread to watch with: the process is at its threads limit
            abort(context, error)
        try:
            for response in responses:
                call.sending_since = time.monotonic()
                yield response
                call.sending_since = None
        finally:
            self._discard(call)
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    def _add(self, call: _WatchedCall) -> None:
        # Kept only once started: a thread that failed to start (a pids limit), kept, would have
        # been taken for the watchdog, and no call watched again until a restart.
        with self._changed:
            if self._thread is None:
                thread = threading.Thread(target=self._look_while_watching, name=WATCHDOG_THREAD_NAME, daemon=True)
                thread.start()
                self._thread = thread
            self._calls.add(call)

    def _discard(self, call: _WatchedCall) -> None:
        with self._changed:
            self._calls.discard(call)
            if not self._calls:
                self._changed.notify_all()

    def _look_while_watching(self) -> None:
        """Look until no call is watched: the thread lives only while calls stream."""
        interval = min(_LONGEST_LOOK_INTERVAL_SECONDS, self.limit_seconds / 4)
        while True:
            with self._changed:
                if self._calls:
                    self._changed.wait(interval)
                if not self._calls:
                    self._thread = None
                    return
            self.cancel_stalled(time.monotonic())

    def cancel_stalled(self, now: float) -> None:
        """Cancel every call whose client has not taken a response for longer than the limit."""
        with self._changed:
            calls = list(self._calls)
        for call in calls:
            since = call.sending_since
            if call.cancelled or since is None or now - since <= self.limit_seconds:
                continue
            call.cancelled = True
            call.log_context.run(
                logger.warning,
                "the client took no result for %g s, the server's limit (--result-read-timeout-seconds): "
                "cancelling the call to free what it holds", self.limit_seconds,
            )
            call.context.cancel()
