"""A closed client refuses calls with a clear error; a text-mode file is refused; closing an async
client cancels its streams however it was built."""

from __future__ import annotations

import asyncio
import codecs
import copy
import io
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    WaitForCancellation,
    frame_response,
    serving,
    summary_response,
    video_info_response,
)

from videodag_client import AsyncVideodagClient, FailedPrecondition, VideodagClient, VideodagError
from videodag_client import _client as client_module


def _every_call(client: VideodagClient, video_path: Path) -> dict[str, object]:
    return {
        "list_pipelines": lambda: client.list_pipelines(),
        "get_pipeline": lambda: client.get_pipeline("motion_v1"),
        "upload_and_run": lambda: list(client.upload_and_run(video_path, "motion_v1")),
        "submit_job": lambda: client.submit_job(video_path, "motion_v1"),
        "get_job": lambda: client.get_job("j"),
        "list_jobs": lambda: client.list_jobs(),
        "cancel_job": lambda: client.cancel_job("j"),
        "watch_job": lambda: list(client.watch_job("j")),
    }


@pytest.mark.parametrize(
    "call",
    ["list_pipelines", "get_pipeline", "upload_and_run", "submit_job", "get_job", "list_jobs", "cancel_job",
     "watch_job"],
)
def test_calls_after_close_raise_failed_precondition(target: str, video_path: Path, call: str) -> None:
    client = VideodagClient(target)
    client.close()
    with pytest.raises(FailedPrecondition, match="the client is closed") as refused:
        _every_call(client, video_path)[call]()  # type: ignore[operator]
    assert refused.value.reason == "CLIENT_CLOSED"


def test_a_client_on_a_channel_its_owner_closed_raises_failed_precondition(target: str, video_path: Path) -> None:
    channel = grpc.insecure_channel(target)
    client = VideodagClient.from_channel(channel)
    channel.close()
    for call in ("list_pipelines", "upload_and_run", "get_job"):
        with pytest.raises(FailedPrecondition, match="the client is closed"):
            _every_call(client, video_path)[call]()  # type: ignore[operator]


def test_a_text_mode_file_is_refused_with_a_clear_type_error(client: VideodagClient, video_path: Path) -> None:
    with video_path.open("r", encoding="latin-1") as text, pytest.raises(TypeError, match="binary file object"):
        client.upload_and_run(text, "motion_v1")
    with pytest.raises(TypeError, match="open it with 'rb'"):
        client.submit_job(io.StringIO("not bytes"), "motion_v1")  # type: ignore[arg-type]


class _ReadsText:
    """A file-like object with only `read`, which returns text."""

    def read(self, size: int = -1) -> str:
        return "not bytes"


@pytest.mark.parametrize("opened", ["codecs", "spooled", "read only"])
@pytest.mark.parametrize("call", ["upload_and_run", "submit_job"])
def test_a_file_object_that_reads_text_is_refused_with_a_clear_type_error(
    client: VideodagClient, video_path: Path, opened: str, call: str
) -> None:
    if opened == "codecs":
        source: Any = codecs.open(str(video_path), "r", encoding="latin-1")  # noqa: SIM115
    elif opened == "spooled":
        source = tempfile.SpooledTemporaryFile(mode="w+")  # noqa: SIM115
        source.write("text, not a video")
        source.seek(0)
    else:
        source = _ReadsText()
    try:
        with pytest.raises(TypeError, match=r"binary file object \(open it with 'rb'\).*returned str"):
            stream = getattr(client, call)(source, "motion_v1")
            if call == "upload_and_run":
                list(stream)
    finally:
        if opened != "read only":
            source.close()


@pytest.mark.parametrize("source", [None, 3, 2.5], ids=["None", "int", "float"])
def test_what_is_neither_a_path_nor_a_file_is_refused_with_a_type_error_naming_it(
    client: VideodagClient, source: object
) -> None:
    with pytest.raises(TypeError, match=r"must be a path, a binary file object \(open it with 'rb'\), bytes or an "
                                        f"iterable of bytes, got {type(source).__name__}$"):
        client.upload_and_run(source, "motion_v1")  # type: ignore[arg-type]


def test_a_file_like_object_with_only_read_is_uploaded_as_a_stream(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    class OnlyRead:
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._data.read(size)

    servicer.run_script = [AcknowledgeUpload(), summary_response(0)]
    list(client.upload_and_run(OnlyRead(video_path.read_bytes()), "motion_v1"))  # type: ignore[arg-type]

    assert servicer.uploaded_bytes() == video_path.read_bytes()
    assert servicer.config.declared_size_bytes == 0, "no size is declared for what cannot seek"


@pytest.mark.parametrize("built_from", ["target", "from_client"])
def test_closing_an_async_client_cancels_its_running_streams(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, built_from: str
) -> None:
    servicer.run_script = [AcknowledgeUpload(), video_info_response(), WaitForCancellation(timeout_seconds=30)]
    channel = grpc.insecure_channel(target)

    async def scenario() -> BaseException | None:
        if built_from == "target":
            client = AsyncVideodagClient(target)
        else:
            client = AsyncVideodagClient.from_client(VideodagClient.from_channel(channel))
        stream = client.upload_and_run(video_path, "motion_v1")
        await anext(stream)  # UploadReceived: the call is running
        await client.close()
        try:
            await asyncio.wait_for(anext(stream), 10)
        except (StopAsyncIteration, VideodagError) as ended:
            return ended
        return None

    ended = asyncio.run(scenario())
    channel.close()
    # Not a plain stop: that would pass for a run that ended (without its summary).
    assert isinstance(ended, FailedPrecondition) and ended.reason == "CLIENT_CLOSED", repr(ended)
    assert servicer.cancelled.wait(10), "the server saw the call cancelled"


@pytest.mark.parametrize("built_from", ["target", "channel"])
def test_closing_a_client_cancels_its_running_streams_even_on_a_channel_it_does_not_own(
    target: str, servicer: FakeVideoPipelineServicer, video_path: Path, built_from: str
) -> None:
    servicer.run_script = [AcknowledgeUpload(), video_info_response(), WaitForCancellation(timeout_seconds=30)]
    with grpc.insecure_channel(target) as channel:
        client = VideodagClient(target) if built_from == "target" else VideodagClient.from_channel(channel)
        stream = client.upload_and_run(video_path, "motion_v1")
        next(stream)  # UploadReceived: the call is running
        client.close()
        assert servicer.cancelled.wait(10), "the server saw the call cancelled"
        with pytest.raises(FailedPrecondition) as closed:
            list(stream)
        assert closed.value.reason == "CLIENT_CLOSED"
        # The channel's owner goes on using it.
        assert [p.id for p in VideodagClient.from_channel(channel).list_pipelines()] == sorted(servicer.pipelines)


@pytest.mark.parametrize("call", ["list_pipelines", "get_pipeline", "get_job", "list_jobs", "cancel_job", "delete_job"])
def test_async_calls_after_close_raise_failed_precondition_too(target: str, call: str) -> None:
    async def after_close() -> None:
        client = AsyncVideodagClient(target)
        await client.close()
        arguments = {"list_pipelines": (), "list_jobs": ()}.get(call, ("some-id",))
        await getattr(client, call)(*arguments)

    with pytest.raises(FailedPrecondition, match="the client is closed") as refused:
        asyncio.run(after_close())
    assert refused.value.reason == "CLIENT_CLOSED"


class _HeldFile(io.BytesIO):
    """A video whose reads wait until released: a checksum pass over a long file."""

    def __init__(self, released: threading.Event) -> None:
        super().__init__(b"\0" * 1024)
        self._released = released

    def read(self, size: int | None = -1) -> bytes:
        self._released.wait(30)
        return super().read(size)


def test_submissions_reading_their_files_hold_up_no_other_async_call(target: str) -> None:
    released = threading.Event()

    async def scenario() -> float:
        async with AsyncVideodagClient(target) as client:
            submissions = [asyncio.create_task(client.submit_job(_HeldFile(released), "motion_v1")) for _ in range(8)]
            await asyncio.sleep(0.2)  # every submission is in its checksum pass
            started = time.monotonic()
            await asyncio.wait_for(client.list_pipelines(), 10)
            waited = time.monotonic() - started
            released.set()
            await asyncio.gather(*submissions, return_exceptions=True)
            return waited

    try:
        assert asyncio.run(scenario()) < 2.0
    finally:
        released.set()


def test_the_client_pings_its_connection_and_reconnects_soon_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without keepalive, a run, a watch or `videodag run` over a connection a load balancer or
    NAT dropped without a word waited forever (the server had long let go of the call). With
    gRPC's reconnect backoff (up to 120 s), calls failed for 22 s after a 45 s outage had ended;
    with the 5 s cap, in 1.4 s."""
    opened: list[list[tuple[str, object]]] = []
    real_channel = grpc.insecure_channel

    def recording_channel(target: str, options: list[tuple[str, object]]) -> grpc.Channel:
        opened.append(list(options))
        return real_channel(target, options=options)

    monkeypatch.setattr(grpc, "insecure_channel", recording_channel)
    VideodagClient("localhost:1").close()
    VideodagClient("localhost:1", channel_options=[("grpc.keepalive_time_ms", 45_000), ("grpc.x", 1)]).close()

    defaults, chosen = (dict(options) for options in opened)
    assert defaults["grpc.keepalive_time_ms"] == 30_000 and defaults["grpc.http2.max_pings_without_data"] == 0
    assert defaults["grpc.http2.ping_timeout_ms"] == 60_000
    assert defaults["grpc.max_reconnect_backoff_ms"] == 5_000
    assert chosen["grpc.keepalive_time_ms"] == 45_000 and chosen["grpc.x"] == 1
    assert [key for key, _ in opened[1]].count("grpc.keepalive_time_ms") == 1


def test_a_run_the_server_ends_without_its_summary_is_not_taken_for_a_complete_one(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    """Ended OK after two frames, with no summary: the caller had no way to tell it from a whole run."""
    servicer.run_script = [AcknowledgeUpload(), video_info_response(), frame_response(0, 25.0, {}),
                           frame_response(1, 25.0, {})]
    events = []
    with pytest.raises(VideodagError) as ended:
        for event in client.upload_and_run(video_path, "motion_v1"):
            events.append(event)
    assert [type(event).__name__ for event in events] == ["UploadReceived", "VideoOpened", "FrameResult", "FrameResult"]
    assert ended.value.code is grpc.StatusCode.INTERNAL and ended.value.reason == "RUN_ENDED_WITHOUT_SUMMARY"
    assert str(ended.value.message) == ("the server ended the run without its summary, after 2 frames: the results "
                                        "may be incomplete")


FORKED_AFTER_USE = """
import asyncio, os, sys, threading
from videodag_client import AsyncVideodagClient, VideodagError

async def answered(call):
    try:
        await asyncio.wait_for(call, 15)
    except (VideodagError, TimeoutError):
        pass

async def a_thread_takes(call, thread_name):
    # Whether a thread of the client's pool runs the call: what the inherited pool failed to
    # start. Whether gRPC then answers is gRPC's own fork handling, which may hang a child's
    # first call (the README says so), and is not what is checked here.
    task = asyncio.ensure_future(call)
    await asyncio.sleep(1)
    started = any(thread.name.startswith(thread_name) for thread in threading.enumerate())
    task.cancel()
    return started

target, video = sys.argv[1], sys.argv[2]
client = AsyncVideodagClient(target, timeout=10)
asyncio.run(answered(client.list_pipelines()))  # each call leaves an idle thread in its pool
asyncio.run(answered(client.submit_job(video, "motion_v1")))
child = os.fork()
if child == 0:
    lookup = asyncio.run(a_thread_takes(client.list_pipelines(), "async-client-call"))
    submission = asyncio.run(a_thread_takes(client.submit_job(video, "motion_v1"), "async-client-submit"))
    os._exit(0 if lookup and submission else 1)
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_an_async_client_used_before_a_fork_runs_the_childs_calls(target: str, video_path: Path) -> None:
    """The child inherited the pools with the parent's idle threads counted, none of them its
    own: its first lookup and its first submission started no thread and waited for good (a
    pre-fork server's worker). In a process of its own: this one's other gRPC threads would
    have gRPC skip its fork handlers."""
    forked = subprocess.run([sys.executable, "-c", FORKED_AFTER_USE, target, str(video_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert forked.returncode == 0, f"no thread took the child's lookup or submission: {forked.stderr}"


def test_a_client_cannot_be_pickled_and_the_error_says_what_to_do_instead(target: str) -> None:
    """Passing a client to a spawned process or a process pool: gRPC's channel cannot cross."""
    with VideodagClient(target) as client:
        with pytest.raises(TypeError, match="make a VideodagClient in each process"):
            pickle.dumps(client)
        with pytest.raises(TypeError, match="make a VideodagClient in each process"):
            pickle.dumps(AsyncVideodagClient.from_client(client))


class _SlowLookups(FakeVideoPipelineServicer):
    """ListPipelines answers only once its call has ended (or after 10 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()

    def ListPipelines(self, request: object, context: grpc.ServicerContext) -> object:
        self.asked.set()
        deadline = time.monotonic() + 10
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().ListPipelines(request, context)  # type: ignore[arg-type]


def test_a_lookup_in_flight_when_the_client_closes_says_the_client_closed() -> None:
    """Not gRPC's CANCELLED "Channel closed!", which reads as a cancel someone asked for."""
    slow = _SlowLookups()
    raised: list[BaseException] = []

    def look_up(client: VideodagClient) -> None:
        try:
            client.list_pipelines()
        except BaseException as error:
            raised.append(error)

    with serving(slow) as target:
        client = VideodagClient(target)
        looking = threading.Thread(target=look_up, args=(client,))
        looking.start()
        assert slow.asked.wait(10)
        client.close()
        looking.join(10)
    assert len(raised) == 1 and isinstance(raised[0], FailedPrecondition), raised
    assert raised[0].reason == "CLIENT_CLOSED"


class _SlowFile(io.BytesIO):
    """A file on a slow share: each read (a MiB, as the checksum pass reads) takes 0.2 s."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        self.reads.set()
        time.sleep(0.2)
        return super().read(size)


@pytest.mark.parametrize("call", ["submit_job", "upload_and_run"])
def test_closing_the_client_stops_a_checksum_pass_under_way_in_another_thread(
    target: str, servicer: FakeVideoPipelineServicer, call: str
) -> None:
    """It read on for the whole file (seconds to minutes) and only then raised CLIENT_CLOSED."""
    slow = _SlowFile(bytes(64 * 1024 * 1024))  # 13 s of reading at this pace
    slow.seek(5)
    raised: list[BaseException] = []
    client = VideodagClient(target)

    def start() -> None:
        try:
            getattr(client, call)(slow, "motion_v1")
        except BaseException as error:
            raised.append(error)

    starting = threading.Thread(target=start)
    starting.start()
    assert slow.reads.wait(10)
    closed_at = time.monotonic()
    client.close()
    starting.join(30)
    assert time.monotonic() - closed_at < 5, "the pass read on after the close"
    assert len(raised) == 1 and isinstance(raised[0], FailedPrecondition), raised
    assert raised[0].reason == "CLIENT_CLOSED"
    assert raised[0].__suppress_context__, "the close alone, not a 'CANCELLED: abandoned' under it"
    assert slow.tell() == 5, "the file is put back where the caller left it"
    assert servicer.requests == [], "no call was made"


def test_a_copy_of_a_client_is_the_client() -> None:
    """A shallow copy shared the channel and the calls, and closed each other's; an object that
    holds a client (a config, a dataclass) deep-copies with the client shared."""
    client = VideodagClient("localhost:1")
    try:
        assert copy.copy(client) is client
        assert copy.deepcopy({"client": client})["client"] is client
        wrapped = AsyncVideodagClient.from_client(client)
        assert copy.copy(wrapped) is wrapped and copy.deepcopy([wrapped])[0] is wrapped
    finally:
        client.close()


def test_new_connections_to_leave_a_draining_server_are_spaced_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first at once, then 0.05 s, 0.1 s, ... up to 1 s apart; after a quiet 10 s, at once
    again. At most one a second stranded retries on the draining replica for a second after the
    balancer had dropped it; one a refusal made hundreds of connections."""
    now = [0.0]
    monkeypatch.setattr(client_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(client_module, "says_draining", lambda error: True)
    refused = grpc.RpcError()
    with VideodagClient("localhost:1") as client:
        reconnected_at = []
        for moment in [0.0, 0.01, 0.06, 0.1, 0.16, 0.3, 0.36, 0.7, 0.76, 1.5, 1.56, 2.0, 2.56, 3.56, 20.0, 20.01]:
            now[0] = moment
            before = client._connection
            client._connect_again_if_draining(before, refused)
            if client._connection is not before:
                reconnected_at.append(moment)
    assert reconnected_at == [0.0, 0.06, 0.16, 0.36, 0.76, 1.56, 2.56, 3.56, 20.0]
