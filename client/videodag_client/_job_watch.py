"""Following a job: `JobWatch` yields its events, and reconnects by itself when the connection
drops (or the server restarts), resuming after the last frame it delivered, so that a caller
sees every frame result once.

Apart from the job calls, which each answer once: a watch outlives the call that opened it,
reconnecting after a doubling backoff, or after the delay a full server asks for.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from videodag.v1 import video_pipeline_service_pb2
from videodag_client._errors import VideodagError, client_closed_error, from_grpc_error
from videodag_client._events import frame_result_from_proto
from videodag_client._job_values import Job, JobEvent, job_from_proto

# A dropped connection or a restarting server: the watch is resumed, not failed. So is a cancel
# this watch did not make (its own `close()` ends it first): the server cancels a watch that
# reads no event for its result read limit, with no status details to tell it by.
_RECONNECTABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# gRPC's words for a call its own channel's close ended (a channel its owner closed under the
# watch): there is no connection to go back on.
_CHANNEL_CLOSED = "Channel closed"
# A proxy between (nginx, an ingress) ending the stream: its own error page while the server
# restarts (HTTP 502, 503 or 504, which gRPC reports as UNKNOWN) or the reset of its read timeout
# on a quiet stream (INTERNAL "Stream removed", RST_STREAM). These are gRPC's words for what the
# transport did, never the server's: its errors carry a reason.
_CUT_BY_A_PROXY = re.compile(r"Stream removed|RST_STREAM|Received http2 header with status: 50[234]\b")
# A server already streaming its maximum of watches refuses more with RESOURCE_EXHAUSTED and
# says when to try again (RetryInfo): a slot frees when some watched job ends.
_WATCHES_FULL = "TOO_MANY_WATCHES"
_FIRST_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0


class JobWatch(Iterator[JobEvent]):
    """The events of one job, across reconnects; `close()` (or leaving its `with`) stops it.

    `last_frame_index` is the index of the last frame delivered (the resume point), `job` the
    latest job state seen, `reconnects` how many times the connection was re-established.
    Only a watch that has had a first response reconnects after losing its connection: one
    that never got through is pointed at a wrong or stopped server, and waiting would only
    hide that.
    """

    def __init__(
        self,
        open_call: Callable[[int | None], Any],
        after_frame_index: int | None,
        reconnect_window: float,
        on_reconnect: Callable[[VideodagError, int | None], None] | None,
        client_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self._open_call = open_call
        self._client_closed = client_closed
        self._reconnect_window = reconnect_window
        self._on_reconnect = on_reconnect
        self.last_frame_index = after_frame_index
        self.job: Job | None = None
        self.reconnects = 0
        self._call: Any = None
        self._done = False
        self._closed = False
        self._call_lock = threading.Lock()
        """`close()` from another thread and a call being opened: one of them cancels the call."""
        self._wait_ended = threading.Event()
        """Ends a wait before the next attempt when set: by `close()`, or by the client's."""
        self._failing_since: float | None = None
        self._backoff = _FIRST_BACKOFF_SECONDS
        self._connected = False
        """Set by the first response: from then on a lost connection is worth reconnecting."""

    def __iter__(self) -> JobWatch:
        return self

    def __next__(self) -> JobEvent:
        try:
            return self._next_event()
        except (StopIteration, VideodagError):
            raise  # the watch has ended already
        except BaseException:
            # Ctrl-C while waiting (for an event, or to reconnect), or an `on_reconnect` that
            # raised: the watch ends with it rather than hold one of the server's watch slots.
            self.close()
            raise

    def _next_event(self) -> JobEvent:
        while not self._done:
            if self._call is None and not self._hold(self._open_call(self.last_frame_index)):
                break  # closed while the call was being opened: it was cancelled
            try:
                response = next(self._call)
            except StopIteration:
                self._done = True
                break
            except grpc.RpcError as error:
                self._call = None
                if self._done:
                    break  # closed from another thread
                if self._client_closed():
                    raise client_closed_error() from error
                self._wait_or_raise(error)
                continue
            self._failing_since, self._backoff = None, _FIRST_BACKOFF_SECONDS
            self._connected = True
            event = self._convert(response)
            if self._done and not self._closed:  # the job finished
                self._read_the_end()
            if event is not None:
                return event
        raise StopIteration

    def _hold(self, call: Any) -> bool:
        """Keep the call just opened for `close()` to cancel; cancel it now if `close()` came first:
        unseen by `close()`, it went on until the job ended, its first event (the job, running)
        taken for the last, and the thread that iterated waited as long."""
        with self._call_lock:
            if not self._closed:
                self._call = call
                return True
        call.cancel()
        return False

    def _read_the_end(self) -> None:
        """The final job is the last event: read the call's end (its OK status follows at once)
        rather than cancel a call the server is finishing, which its metrics would count as cancelled."""
        try:
            for _ in self._call:  # left in place meanwhile, so that close() can still cancel it
                pass
        except grpc.RpcError:
            pass  # whatever ended it, the final job is in hand
        finally:
            self._call = None

    def _convert(self, response: video_pipeline_service_pb2.WatchJobResponse) -> JobEvent | None:
        kind = response.WhichOneof("event")
        if kind == "frame":
            frame = frame_result_from_proto(response.frame)
            if self.last_frame_index is not None and frame.frame_index <= self.last_frame_index:
                return None  # delivered already (frames come in order): a server's resend is not a new frame
            self.last_frame_index = frame.frame_index
            return frame
        if kind == "job":
            job = job_from_proto(response.job)
            self.job = job
            if job.state.is_finished:
                self._done = True
            return job
        return None

    def _wait_or_raise(self, error: grpc.RpcError) -> None:
        """Wait before the next attempt, or raise the error when it is final or the window is spent."""
        mapped = from_grpc_error(error)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        window_left = self._reconnect_window - (now - self._failing_since)
        if not self._worth_retrying(mapped) or window_left <= 0:
            self._done = True
            raise mapped from error
        if self._on_reconnect is not None:
            self._on_reconnect(mapped, self.last_frame_index)
        self._wait_ended.wait(min(self._delay_before_retry(mapped), window_left))
        self.reconnects += 1

    def _worth_retrying(self, error: VideodagError) -> bool:
        """A full server always (it answered, so it is the right one); a lost connection once connected."""
        if _is_watches_full(error):
            return True
        if error.code is grpc.StatusCode.CANCELLED and _CHANNEL_CLOSED in str(error):
            return False
        return self._connected and (error.code in _RECONNECTABLE or _cut_by_a_proxy(error))

    def _delay_before_retry(self, error: VideodagError) -> float:
        """The server's retry delay when it gives one for a full server; else, or for a hint
        shorter than the backoff has come to, a doubling backoff: a hint of 0 s (or less) would
        have the watch call again at once, over and over, for its whole reconnect window."""
        if _is_watches_full(error) and error.retry_after is not None and error.retry_after >= self._backoff:
            return error.retry_after
        delay = self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)
        return delay

    def close(self) -> None:
        """Cancels the call; iteration stops (a wait before reconnecting ends at once). Safe to call
        from another thread than the one iterating."""
        with self._call_lock:
            self._closed = self._done = True
            call = self._call
        self._wait_ended.set()
        if call is not None:
            call.cancel()

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _cut_by_a_proxy(error: VideodagError) -> bool:
    return (error.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and not error.reason
            and _CUT_BY_A_PROXY.search(error.message) is not None)


def _is_watches_full(error: VideodagError) -> bool:
    return error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == _WATCHES_FULL
