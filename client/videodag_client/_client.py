"""The typed client: a gRPC channel to one server, and the service's calls as Python methods."""

from __future__ import annotations

import functools
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc

from videodag.v1 import run_pb2, video_pipeline_service_pb2
from videodag_client._arguments import text_argument
from videodag_client._connection import (
    ChannelMaker,
    Connection,
    leaves_a_draining_server,
    retire,
    says_draining,
)
from videodag_client._errors import (
    FieldViolation,
    Internal,
    InvalidArgument,
    VideodagError,
    client_closed_error,
)
from videodag_client._events import Event, FrameResult, RunSummary, event_from_proto
from videodag_client._jobs import JobCalls
from videodag_client._options import RunOptions
from videodag_client._pipelines import PipelineInfo, pipeline_from_proto
from videodag_client._target import checked_target
from videodag_client._upload import (
    DEFAULT_CHUNK_SIZE,
    ChunkedRequests,
    PathOrFile,
    UploadFile,
    UploadProgress,
    run_config,
)
from videodag_client._upload_call import start_upload_call, upload_call_error
from videodag_client._wire import bytes_field_encoder

DEFAULT_TARGET = "localhost:50051"
# gRPC's own words (its channel has "no default __reduce__") name neither the client nor the way out.
PICKLING_REFUSED = ("a videodag client holds a gRPC channel, which cannot be sent to another process: make a "
                    "VideodagClient in each process (in a pool's initializer, or in the child)")

# Keepalive pings, so a connection a load balancer, NAT or firewall dropped without a word
# (no FIN, no RST) fails its calls with UNAVAILABLE within a minute and a half, instead of
# leaving a run, a watch or `videodag run` waiting on it forever; a watch then resumes on a
# new connection.
# 30 s apart, as the server allows (10 s or more); 60 s for the answer, which can queue behind
# the results a slow link holds. Pinged with no data too: a watch of a queued job is quiet.
# Reconnecting at least every 5 s while the server is down: gRPC's backoff otherwise grows to
# 120 s, so a watch (or a long-lived client) failed calls for up to two minutes after the
# server was back (22 s after a 45 s outage), past a short reconnect window altogether.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 60_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 30_000),
    ("grpc.http2.ping_timeout_ms", 60_000),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

# Time between two new connections made to leave a draining server (`_connection`): the first
# at once, then doubling from the first spacing up to the most, so that retries soon after a
# balancer drops the draining replica reach another, and a balancer slow to drop it gets a
# few new connections a second at first, then one a second, not one a refusal. After a quiet
# while, the next drain starts again at once.
_FIRST_RECONNECT_SPACING_SECONDS = 0.05
_MOST_RECONNECT_SPACING_SECONDS = 1.0
_RECONNECTS_FORGOTTEN_AFTER_SECONDS = 10.0

_encode_upload_chunk = bytes_field_encoder(video_pipeline_service_pb2.UploadAndRunRequest, "chunk")


# What an HTTP/2 header value may hold, as gRPC checks it: printable ASCII.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


class VideodagClient(JobCalls):
    """A connection to one videodag server; every failed call raises a `VideodagError` subclass.

        with VideodagClient("localhost:50051") as client:
            for event in client.upload_and_run("clip.mp4", "player_tracking_v1"):
                print(event)

    `target` is HOST:PORT (`[::1]:50051` for IPv6) or a gRPC target URI (`dns:///host:50051`,
    `unix:/path`); one that cannot be meant (a URL, no port, spaces around it) is a ValueError
    here, not an UNAVAILABLE at the first call. Calls go down one connection, to the first of
    its addresses that answers (gRPC's default); told `SERVER_DRAINING`, the client makes a new
    one for the calls after (behind one address, a balancer gives it another replica; see
    `_connection`). For a client given every replica's address,
    `channel_options=[("grpc.lb_policy_name", "round_robin")]` spreads them, so that a call a
    draining replica refused, retried, reaches another (at the cost of reconnecting in the
    background, about every 5 s, while a server is down); such a client keeps its channel.
    `token` is sent as `authorization: Bearer <token>` on every call; without `credentials`
    (TLS) it travels in clear text, which is only acceptable on a trusted network.
    `timeout` (seconds) is the default deadline of every call; None means no deadline. A call's
    own `timeout` overrides it: None there takes the client's, `math.inf` means no deadline.
    0 or less (or NaN) is a deadline passed already: the call raises `DeadlineExceeded`.
    After `close()`, every call raises `FailedPrecondition` (reason `CLIENT_CLOSED`).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        _check_token(token)  # before the channel, so a refused token leaves nothing open
        try:
            checked_target(target)
        except ValueError as problem:
            raise ValueError(f"target: {problem}") from None
        options = with_defaults(channel_options)

        def make_channel(*, connection_of_its_own: bool = False) -> grpc.Channel:
            # gRPC shares connections among the channels of a process that have the same target
            # and options: one made to leave a draining server must not share the old one's.
            chosen = [*options, ("grpc.use_local_subchannel_pool", 1)] if connection_of_its_own else options
            if credentials is None:
                return grpc.insecure_channel(target, options=chosen)
            return grpc.secure_channel(target, credentials, options=chosen)

        self._setup(make_channel(), owns_channel=True, token=token, timeout=timeout,
                    make_channel=functools.partial(make_channel, connection_of_its_own=True)
                    if leaves_a_draining_server(target, options) else None)

    def __reduce__(self) -> Any:
        raise TypeError(PICKLING_REFUSED)

    def __copy__(self) -> VideodagClient:
        """The same client (shallow copies shared its channel and calls, and closed each other):
        a client is shared, across threads too, not copied."""
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> VideodagClient:
        """As `__copy__`: an object holding a client (a config, a dataclass) deep-copies with the client shared."""
        return self

    @classmethod
    def from_channel(
        cls, channel: grpc.Channel, *, token: str | None = None, timeout: float | None = None
    ) -> VideodagClient:
        """Wraps a channel the caller built (interceptors, custom options); the caller closes it.

        Interceptors see the requests of the uploading calls (UploadAndRun, SubmitJob) as the
        wire bytes they are sent as (`_wire`), not as messages; responses are messages."""
        _check_token(token)
        client = cls.__new__(cls)
        client._setup(channel, owns_channel=False, make_channel=None, token=token, timeout=timeout)
        return client

    def _setup(
        self, channel: grpc.Channel, *, owns_channel: bool, make_channel: ChannelMaker | None, token: str | None,
        timeout: float | None,
    ) -> None:
        """`make_channel` makes another channel like `channel`, with a connection of its own, for
        the client to leave a draining server (see `_connection`); None for a channel the caller
        owns, or one whose calls are not all down one connection."""
        self._owns_channel = owns_channel
        self._connection = Connection(channel)
        self._make_channel = make_channel
        self._retired: list[Connection] = []  # made before a drain, with calls still under way
        self._connection_of: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()
        self._next_reconnect = 0.0
        self._last_reconnect = -math.inf
        self._reconnect_spacing = 0.0
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._timeout = timeout
        self._closed = False
        # Streams and futures started and perhaps still running, for `close` to cancel: on a
        # channel the caller owns, closing the client must not close the channel to do it.
        self._running_calls: weakref.WeakSet[grpc.Future] = weakref.WeakSet()
        # Waits between a watch's calls (a reconnect, a full server's retry delay), for `close`
        # to end: the watch then finds the client closed at once, not after the delay.
        self._waits: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._running_calls_lock = threading.Lock()

    def close(self) -> None:
        """Closes the channel if this client opened it; its streams, watches (one waiting to
        reconnect too) and job submissions still running are cancelled, and raise
        `FailedPrecondition` (reason `CLIENT_CLOSED`).

        Later calls raise it too, also on a client built with `from_channel`, whose channel
        stays open for its owner. On such a client a call waiting for its one answer (a
        lookup, another thread's `list_pipelines`) is left to finish."""
        with self._running_calls_lock:
            self._closed = True
            running = list(self._running_calls)
            waits = list(self._waits)
            connections = [self._connection, *self._retired]
        for call in running:
            call.cancel()
        for wait in waits:
            wait.set()
        if self._owns_channel:
            for connection in connections:
                connection.channel.close()

    def _is_closed(self) -> bool:
        return self._closed

    def _end_on_close(self, wait: threading.Event) -> None:
        """Have `close` set `wait` (at once if closed already)."""
        with self._running_calls_lock:
            if not self._closed:
                self._waits.add(wait)
                return
        wait.set()

    def _check_open(self) -> None:
        if self._closed:
            raise client_closed_error()

    def _invoke(self, method: Callable[[Connection], Any], *args: Any, **kwargs: Any) -> Any:
        """Starts a call: `method` picks the callable off the connection (`lambda c: c.stub.GetJob`).
        A closed client (or channel) is refused with `FailedPrecondition`, not with the
        ValueError gRPC raises for a closed channel. A server that says it is draining has the
        client connect again for the calls after (`_connection`)."""
        self._check_open()
        with self._running_calls_lock:
            connection = self._connection
            connection.enter()
            self._retired, idle = retire(self._retired)
        self._close_channels(idle)
        call: Any = None
        try:
            call = method(connection)(*args, **kwargs)
        except grpc.RpcError as error:
            self._connect_again_if_draining(connection, error)
            raise
        except (ValueError, RuntimeError) as error:
            if "closed" not in str(error).lower():
                raise
            raise client_closed_error() from error
        finally:
            with self._running_calls_lock:
                if isinstance(call, grpc.Future):  # a stream or a future, not a unary call's response
                    connection.track(call)
                connection.leave()
        if not isinstance(call, grpc.Future):
            return call
        call.add_done_callback(lambda ended: self._connect_again_if_draining(connection, ended))
        with self._running_calls_lock:
            closed = self._closed
            self._connection_of[call] = connection
            if not closed:
                self._running_calls.add(call)
        if closed:  # closed while it started
            call.cancel()
            raise client_closed_error()
        return call

    def _call_failed(self, call: Any) -> None:
        """What a stream or a submission tells the client of its failure before raising it:
        gRPC wakes the caller before it runs the call's done callbacks, so a caller retrying at
        once could otherwise go down the connection of a server that said it drains."""
        with self._running_calls_lock:
            connection = self._connection_of.get(call)
        if connection is not None:
            self._connect_again_if_draining(connection, call)

    def _connect_again_if_draining(self, connection: Connection, ended: Any) -> None:
        """A new channel for the calls after, if `ended` (a failed call, or one that ended) says
        the server behind `connection` drains; the old one is closed once its calls have ended.
        Spaced out (see `_FIRST_RECONNECT_SPACING_SECONDS`): a balancer that still sends new
        connections to the draining server (its endpoint not yet removed) would otherwise get
        one a refusal."""
        if self._make_channel is None or connection is not self._connection:
            return
        if not (isinstance(ended, grpc.RpcError) and says_draining(ended)):
            return
        with self._running_calls_lock:
            now = time.monotonic()
            if self._closed or connection is not self._connection or now < self._next_reconnect:
                return
            if now - self._last_reconnect > _RECONNECTS_FORGOTTEN_AFTER_SECONDS:
                self._reconnect_spacing = _FIRST_RECONNECT_SPACING_SECONDS
            else:
                self._reconnect_spacing = min(2 * self._reconnect_spacing, _MOST_RECONNECT_SPACING_SECONDS)
            self._last_reconnect = now
            self._next_reconnect = now + self._reconnect_spacing
            self._connection = Connection(self._make_channel())
            # Closed by the next call's `_invoke` once idle, not here: this may run in gRPC's
            # callback of a call on that very channel.
            self._retired.append(connection)

    def _close_channels(self, connections: list[Connection]) -> None:
        for connection in connections:
            connection.channel.close()

    def __enter__(self) -> VideodagClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def list_pipelines(self, *, timeout: float | None = None) -> list[PipelineInfo]:
        """Every pipeline the server runs, sorted by id."""
        response = self._call(
            lambda c: c.stub.ListPipelines, video_pipeline_service_pb2.ListPipelinesRequest(), timeout
        )
        return [pipeline_from_proto(pipeline) for pipeline in response.pipelines]

    def get_pipeline(self, pipeline_id: str, *, timeout: float | None = None) -> PipelineInfo:
        """One pipeline with its node graph; raises `NotFound` for an unknown id."""
        request = video_pipeline_service_pb2.GetPipelineRequest(pipeline_id=text_argument("pipeline_id", pipeline_id))
        response = self._call(lambda c: c.stub.GetPipeline, request, timeout)
        return pipeline_from_proto(response.pipeline)

    def upload_and_run(
        self,
        path_or_file: PathOrFile,
        pipeline_id: str,
        options: RunOptions | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        declare_size: bool = True,
        checksum: bool = True,
        decode_during_upload: bool = False,
        timeout: float | None = None,
        on_upload_progress: UploadProgress | None = None,
    ) -> RunStream:
        """Uploads a video and runs a pipeline on it; returns the events as they arrive.

        The events come in the contract's order: `UploadReceived`, `VideoOpened`, one
        `FrameResult` per processed frame, then `RunSummary`. A failure, even after some
        frames, is raised from the iteration as a `VideodagError` subclass; so is a stream the
        server ended without its summary (`Internal`, reason `RUN_ENDED_WITHOUT_SUMMARY`).

        `path_or_file` is a path, a binary file object read from its current position (left
        open), the video's bytes, or an iterable of its chunks of any sizes (a generator). It is
        streamed in `chunk_size` pieces, never read whole.
        `declare_size` lets the server refuse an oversized upload before any byte is sent;
        `checksum` reads the file once first to send its SHA-256, which the server checks.
        Both need a seekable input and are skipped otherwise. `on_upload_progress` is called
        from gRPC's thread as `(bytes_sent, total_or_None)` and must be quick.

        `decode_during_upload` asks the server to decode while the upload arrives, so the
        first results come back before it ends (for files with their index at the front and
        fragmented MP4, see the contract); `UploadReceived` may then come after frames. It needs the size
        declared, so a seekable, non-empty input and `declare_size`: otherwise `InvalidArgument` is
        raised before any call, as the server would (field `config.declared_size_bytes`).
        A text-mode file object raises TypeError: the video is bytes.

        Closing the returned stream (or leaving its `with` block) cancels the call.
        """

        def first_request() -> tuple[video_pipeline_service_pb2.UploadAndRunRequest, run_pb2.RunConfig]:
            request = video_pipeline_service_pb2.UploadAndRunRequest(config=run_config(pipeline_id, options, "config."))
            request.config.decode_during_upload = decode_during_upload
            return request, request.config

        def check_upload(upload: UploadFile) -> None:
            if decode_during_upload and not upload.size_bytes:
                raise size_unknown_error()

        call, requests = start_upload_call(
            path_or_file,
            check_open=self._check_open,
            first_request=first_request,
            encode_chunk=_encode_upload_chunk,
            start_call=lambda requests: self._invoke(
                lambda c: c.upload_and_run, requests, timeout=self._deadline(timeout), metadata=self._metadata
            ),
            chunk_size=chunk_size,
            declare_size=declare_size,
            checksum=checksum,
            on_upload_progress=on_upload_progress,
            check_upload=check_upload,
        )
        return RunStream(call, requests, self._is_closed, self._call_failed)

    def _deadline(self, timeout: float | None) -> float | None:
        """A call's deadline: its own `timeout`, else the client's; `math.inf` is none at all,
        the one way for a call to have none when the client has a default; 0, less or NaN one
        passed already."""
        chosen = self._timeout if timeout is None else timeout
        if chosen is not None and not chosen > 0:
            # Passed before the call starts, as a negative one is: gRPC lets a unary call with 0
            # (a deadline of "now") through when the server answers within the instant.
            return -1.0
        return None if chosen == math.inf else chosen


def _check_token(token: str | None) -> None:
    # gRPC would refuse the header on every call, as a bare INTERNAL "Illegal header value".
    if token and not _HEADER_VALUE.fullmatch(token):
        position = next(index for index, character in enumerate(token) if not _HEADER_VALUE.fullmatch(character))
        what = "a line break" if token[position] in "\r\n" else f"the character U+{ord(token[position]):04X}"
        # The token itself is a secret: the message says where it goes wrong, not what it is.
        raise ValueError(
            f"token must be printable ASCII with no line break (a token read from a file: strip it); this one "
            f"has {what} at position {position} of {len(token)}"
        )


def size_unknown_error() -> InvalidArgument:
    """What the server answers to decode_during_upload without a declared size, raised before the call."""
    return InvalidArgument(
        "decode_during_upload needs the size declared: a seekable, non-empty input (not a pipe), and declare_size",
        reason="INVALID_OPTIONS",
        field_violations=[FieldViolation("config.declared_size_bytes", "required when decode_during_upload is set")],
    )


class RunStream(Iterator[Event]):
    """The events of one UploadAndRun call, converted and with errors mapped.

    Iterate it to get events as the server sends them; `close()` (or leaving its `with`
    block) cancels the call if it is still running, and stops the upload.
    """

    def __init__(self, call: Any, requests: ChunkedRequests, client_closed: Callable[[], bool] = lambda: False,
                 call_failed: Callable[[Any], None] = lambda call: None) -> None:
        # `call` is both an iterator of responses and a grpc.Call (cancel, code, details).
        self._call = call
        self._requests = requests
        self._client_closed = client_closed
        self._call_failed = call_failed  # told before the error is raised: the client's next call may depend on it
        self._finished = False
        self._summarized = False
        self._frames = 0

    def __iter__(self) -> RunStream:
        return self

    def __next__(self) -> Event:
        try:
            return self._next_event()
        except (StopIteration, VideodagError):
            raise  # the call has ended already
        except BaseException:
            # Ctrl-C while waiting for the next event, with the stream kept alive (an interactive
            # session keeps the traceback, and the traceback this stream): the run must not go on
            # unseen, holding a server slot, nor the upload go on in gRPC's thread.
            self.close()
            raise

    def _next_event(self) -> Event:
        while not self._finished:
            try:
                response = next(self._call)
            except StopIteration:
                self._finish()
                if not self._summarized:
                    raise self._ended_without_summary() from None
                raise
            except grpc.RpcError as error:
                self._finish()
                self._call_failed(self._call)
                raise upload_call_error(error, self._requests, self._client_closed) from error
            event = event_from_proto(response)
            self._summarized = self._summarized or isinstance(event, RunSummary)
            self._frames += isinstance(event, FrameResult)
            if event is not None:
                return event
        raise StopIteration

    def _ended_without_summary(self) -> Internal:
        """A run the server ended OK but without its summary (a server that broke, or not a
        videodag server) is not a complete run: its results may lack frames, silently."""
        return Internal(f"the server ended the run without its summary, after {self._frames} frames: the results "
                        "may be incomplete", reason="RUN_ENDED_WITHOUT_SUMMARY")

    def close(self) -> None:
        """Cancels the call if it is still running; later iteration stops at once."""
        if not self._finished:
            self._call.cancel()
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._requests.close()

    def __enter__(self) -> RunStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # An abandoned stream must not keep uploading, nor keep the file open.
        if not getattr(self, "_finished", True):
            self.close()


def with_defaults(channel_options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`channel_options`, with `DEFAULT_CHANNEL_OPTIONS` for the keys they do not set themselves."""
    given = {key for key, _ in channel_options}
    return [*channel_options, *(option for option in DEFAULT_CHANNEL_OPTIONS if option[0] not in given)]
