"""UploadAndRun through a real loopback server: what the client sends, and the events it yields."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fake_servicer import (
    AcknowledgeUpload,
    FakeVideoPipelineServicer,
    WaitForCancellation,
    frame_response,
    summary_response,
    video_info_response,
)
from google.rpc import code_pb2, status_pb2

from videodag.v1 import run_pb2
from videodag_client import (
    MAX_CHUNK_SIZE,
    FrameResult,
    InvalidArgument,
    NodeError,
    RunOptions,
    RunSummary,
    Unauthenticated,
    UploadReceived,
    VideodagClient,
    VideoOpened,
)


def _open_descriptors_of(path: Path, wait_seconds: float = 5.0) -> int:
    """How many of this process's file descriptors point at `path`, once closing had time to finish."""
    deadline = time.monotonic() + wait_seconds
    while True:
        count = 0
        for descriptor in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{descriptor}") == str(path)
            except OSError:
                continue  # closed while listing
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def _script_successful_run(servicer: FakeVideoPipelineServicer, frames: int = 3) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=frames, size_bytes=123),
        *(frame_response(i, 25.0, {"people": [{"track_id": i + 1, "score": 0.5}]}) for i in range(frames)),
        summary_response(frames),
    ]


def test_config_comes_first_then_chunks_in_order_that_reassemble_the_file(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)
    chunk_size = 64 * 1024

    list(client.upload_and_run(video_path, "people_tracking_v1", chunk_size=chunk_size))

    kinds = [request.WhichOneof("payload") for request in servicer.requests]
    assert kinds[0] == "config"
    assert set(kinds[1:]) == {"chunk"}
    assert [len(chunk) for chunk in servicer.chunks[:-1]] == [chunk_size] * (len(servicer.chunks) - 1)
    assert 0 < len(servicer.chunks[-1]) <= chunk_size
    assert servicer.uploaded_bytes() == video_bytes
    config = servicer.config
    assert config.pipeline_id == "people_tracking_v1"
    assert config.file_name == "clip.mp4"
    assert config.declared_size_bytes == len(video_bytes)
    assert config.sha256 == hashlib.sha256(video_bytes).hexdigest()
    assert not config.HasField("options")
    assert _open_descriptors_of(video_path) == 0


def test_a_file_name_that_is_not_utf8_is_sent_with_replacement_characters(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    """A name made on a Latin-1 system ("été" as bytes e9 74 e9): Python holds it with lone
    surrogates, which protobuf cannot encode; the name only labels the run."""
    _script_successful_run(servicer)
    latin1 = video_path.rename(video_path.with_name(os.fsdecode(b"\xe9t\xe9.mp4")))

    list(client.upload_and_run(latin1, "motion_v1"))

    assert servicer.config.file_name == "\ufffdt\ufffd.mp4"
    assert servicer.uploaded_bytes() == video_bytes


def test_run_options_are_sent_in_the_config(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    _script_successful_run(servicer)
    options = RunOptions(frame_stride=5, max_frames=3, start_seconds=1.5, end_seconds=4.25)

    list(client.upload_and_run(str(video_path), "motion_v1", options))

    sent = servicer.config.options
    assert (sent.frame_stride, sent.max_frames) == (5, 3)
    assert (sent.start_offset.seconds, sent.start_offset.nanos) == (1, 500_000_000)
    assert (sent.end_offset.seconds, sent.end_offset.nanos) == (4, 250_000_000)


def test_file_object_is_read_from_its_position_and_left_open(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)
    stream = io.BytesIO(video_bytes)
    stream.seek(1000)

    list(client.upload_and_run(stream, "motion_v1", chunk_size=50_000))

    assert servicer.uploaded_bytes() == video_bytes[1000:]
    assert servicer.config.declared_size_bytes == len(video_bytes) - 1000
    assert servicer.config.sha256 == hashlib.sha256(video_bytes[1000:]).hexdigest()
    assert not stream.closed


def test_unseekable_stream_is_uploaded_without_size_or_checksum(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(video_bytes)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_fd, "rb") as pipe:
        list(client.upload_and_run(pipe, "motion_v1"))
    feeder.join()

    assert servicer.uploaded_bytes() == video_bytes
    assert servicer.config.declared_size_bytes == 0
    assert servicer.config.sha256 == ""


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_the_videos_bytes_are_uploaded_with_their_size_and_checksum(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_bytes: bytes, kind: type
) -> None:
    """A video already in memory (downloaded, say) needed wrapping in io.BytesIO first."""
    _script_successful_run(servicer)

    list(client.upload_and_run(kind(video_bytes), "motion_v1", chunk_size=50_000))

    assert servicer.uploaded_bytes() == video_bytes
    assert servicer.config.declared_size_bytes == len(video_bytes)
    assert servicer.config.sha256 == hashlib.sha256(video_bytes).hexdigest()


def test_an_iterable_of_chunks_of_any_sizes_goes_out_in_chunk_size_messages(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_bytes: bytes
) -> None:
    """A generator of a request body's pieces (a few KiB, or one byte, each) needed a file-like
    adapter, and its pieces would each have been a message."""
    _script_successful_run(servicer)
    sizes = [1, 7, 3000, 100_000, 0, 65_536]

    def pieces() -> Iterator[bytes]:
        offset = 0
        for size in itertools.cycle(sizes):
            if offset >= len(video_bytes):
                return
            yield video_bytes[offset:offset + size]
            offset += size

    list(client.upload_and_run(pieces(), "motion_v1", chunk_size=50_000))

    assert servicer.uploaded_bytes() == video_bytes
    assert [len(chunk) for chunk in servicer.chunks[:-1]] == [50_000] * (len(servicer.chunks) - 1)
    assert servicer.config.declared_size_bytes == 0 and servicer.config.sha256 == ""


def test_a_chunk_that_is_not_bytes_raises_a_type_error_from_the_iteration(
    client: VideodagClient, servicer: FakeVideoPipelineServicer
) -> None:
    _script_successful_run(servicer)
    with pytest.raises(TypeError, match=r"^the video's chunks must be bytes, got str$"):
        list(client.upload_and_run(iter(["text, not bytes"]), "motion_v1"))  # type: ignore[arg-type]


def test_an_async_iterable_given_to_the_blocking_client_names_the_async_client(client: VideodagClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"video"

    chunks = body()
    with pytest.raises(TypeError, match=r"an async iterable \(async_generator\): give it to AsyncVideodagClient"):
        client.upload_and_run(chunks, "motion_v1")  # type: ignore[arg-type]
    asyncio.run(chunks.aclose())


def test_size_and_checksum_can_be_left_out(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)

    list(client.upload_and_run(video_path, "motion_v1", declare_size=False, checksum=False))

    assert servicer.config.declared_size_bytes == 0
    assert servicer.config.sha256 == ""
    assert servicer.uploaded_bytes() == video_bytes


def test_decode_during_upload_is_asked_for_with_the_size(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)

    list(client.upload_and_run(video_path, "motion_v1", decode_during_upload=True))

    assert servicer.config.decode_during_upload
    assert servicer.config.declared_size_bytes == len(video_bytes)


def test_decode_during_upload_without_a_size_is_refused_before_any_call(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    stream = open(video_path, "rb")  # noqa: SIM115 (the caller's file: it must stay open)
    with pytest.raises(InvalidArgument, match="decode_during_upload needs the size declared") as refused:
        client.upload_and_run(stream, "motion_v1", declare_size=False, decode_during_upload=True)
    # The server's answer to the same request, so one `except` handles both.
    assert [v.field for v in refused.value.field_violations] == ["config.declared_size_bytes"]
    assert not stream.closed  # the caller's file object stays open
    stream.close()
    with pytest.raises(InvalidArgument, match="decode_during_upload"):
        client.upload_and_run(video_path, "motion_v1", declare_size=False, decode_during_upload=True)
    assert servicer.requests == []  # no call was made
    assert _open_descriptors_of(video_path) == 0


class _ReadCounting(io.BytesIO):
    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (RunOptions(frame_stride=3_000_000_000), "options.frame_stride"),
        (RunOptions(max_frames=-(2**40)), "options.max_frames"),
        (RunOptions(start_seconds=float("nan")), "options.start_offset"),
        (RunOptions(end_seconds=float("inf")), "options.end_offset"),
    ],
)
@pytest.mark.parametrize("call", ["upload_and_run", "submit_job"])
def test_options_no_request_can_hold_are_refused_before_the_video_is_read_or_opened(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes,
    options: RunOptions, field: str, call: str,
) -> None:
    stream = _ReadCounting(video_bytes)
    with pytest.raises(InvalidArgument, match=f"cannot be sent as config.*{field}") as refused:
        getattr(client, call)(stream, "motion_v1", options)
    prefix = "config." if call == "upload_and_run" else "config.run_config."
    assert [v.field for v in refused.value.field_violations] == [prefix + field]
    assert refused.value.reason == "INVALID_OPTIONS"
    assert stream.reads == 0, "not even the checksum pass"
    with pytest.raises(InvalidArgument):
        getattr(client, call)(video_path, "motion_v1", options)
    assert _open_descriptors_of(video_path) == 0
    assert servicer.requests == []  # no call was made


@pytest.mark.parametrize(("token", "said"), [("secret\n", "a line break at position 6 of 7"),
                                             ("s\u00e9cret", "the character U+00E9 at position 1 of 6"),
                                             ("a\tb", "the character U+0009 at position 1 of 3")])
def test_a_token_that_cannot_be_a_header_is_refused_when_the_client_is_made(target: str, token: str, said: str) -> None:
    with pytest.raises(ValueError, match="token must be printable ASCII with no line break") as refused:
        VideodagClient(target, token=token)
    assert str(refused.value).endswith(f"this one has {said}")
    assert token.strip()[:3] not in str(refused.value), "a token is a secret: never in a message"


def test_options_left_none_are_sent_as_their_defaults_and_a_wrong_type_is_a_type_error() -> None:
    assert RunOptions(frame_stride=None, max_frames=None).to_proto() == run_pb2.RunOptions()  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RunOptions(frame_stride=2.0).to_proto()  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["frame_stride", "max_frames", "start_seconds", "end_seconds"])
def test_a_bool_for_a_number_is_a_type_error_on_every_protobuf(field: str) -> None:
    """protobuf 5, which the client admits, would send True as 1."""
    with pytest.raises(TypeError, match=f"^{field} must be a number, not True$"):
        RunOptions(**{field: True}).to_proto()
    with pytest.raises(TypeError, match=f"^{field} must be a number, not np.True_$"):
        RunOptions(**{field: np.bool_(True)}).to_proto()


def test_numpy_seconds_are_sent_whole_without_wrapping_around() -> None:
    """int32 seconds times 1e9 overflowed and sent -1 s; a uint64 beyond the field's range sent nothing."""
    sent = RunOptions(start_seconds=np.int32(2**31 - 1), end_seconds=np.float32(1.5)).to_proto()  # type: ignore[arg-type]
    assert (sent.start_offset.seconds, sent.start_offset.nanos) == (2**31 - 1, 0)
    assert (sent.end_offset.seconds, sent.end_offset.nanos) == (1, 500_000_000)
    with pytest.raises(InvalidArgument, match="out of its range"):
        RunOptions(start_seconds=np.uint64(2**63)).to_proto()  # type: ignore[arg-type]


def test_seconds_under_a_nanosecond_are_not_sent_as_zero() -> None:
    """-1e-10 s went as 0 and a run took it, where the CLI refuses it; an end of 1e-10 s went as 0
    and was refused for a value the caller never gave."""
    sent = RunOptions(start_seconds=-1e-10, end_seconds=1e-10).to_proto()
    assert (sent.start_offset.seconds, sent.start_offset.nanos) == (0, -1)
    assert (sent.end_offset.seconds, sent.end_offset.nanos) == (0, 1)
    assert RunOptions(start_seconds=0.0).to_proto().start_offset.nanos == 0


def test_progress_reports_cumulative_bytes_up_to_the_total(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    _script_successful_run(servicer)
    reports: list[tuple[int, int | None]] = []

    list(
        client.upload_and_run(
            video_path, "motion_v1", chunk_size=32 * 1024, on_upload_progress=lambda s, t: reports.append((s, t))
        )
    )

    sent = [bytes_sent for bytes_sent, _ in reports]
    assert len(reports) == len(servicer.chunks)
    assert sent == sorted(sent)
    assert reports[-1] == (len(video_bytes), len(video_bytes))


class _ProgressDisplay:
    """A caller's progress object that answers any attribute, as mocks and proxies do."""

    def __init__(self) -> None:
        self.reports: list[int] = []

    def __call__(self, sent: int, total: int | None) -> None:
        self.reports.append(sent)

    def __getattr__(self, name: str) -> object:
        raise KeyError(name)


def test_a_callback_object_that_answers_any_attribute_is_only_called(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    """Never taken for the async client's deferred reports, whose upload asks them to settle."""
    _script_successful_run(servicer)
    display = _ProgressDisplay()

    events = list(client.upload_and_run(video_path, "motion_v1", chunk_size=32 * 1024, on_upload_progress=display))

    assert isinstance(events[-1], RunSummary)
    assert display.reports[-1] == len(video_bytes)


def test_events_are_converted_to_typed_values(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, video_bytes: bytes
) -> None:
    skipped_track = run_pb2.NodeError(
        node_id="track",
        plugin="bytetrack.track",
        status=status_pb2.Status(code=code_pb2.INTERNAL, message="tracker exploded"),
    )
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(fps=25.0, frame_count=120, size_bytes=len(video_bytes)),
        frame_response(0, 25.0, {"people": [{"box": [1, 2, 30.5, 40], "track_id": 7, "label": "person"}]}),
        frame_response(5, 25.0, {"people": []}, node_errors=[skipped_track]),
        summary_response(2, frames_with_errors=1, frames_in_video=119),
    ]

    events = list(client.upload_and_run(video_path, "people_tracking_v1"))

    assert [type(event) for event in events] == [UploadReceived, VideoOpened, FrameResult, FrameResult, RunSummary]
    upload, video, first, second, summary = events
    assert upload == UploadReceived(len(video_bytes), hashlib.sha256(video_bytes).hexdigest())
    assert video == VideoOpened(
        fps=25.0, frame_count=120, width=768, height=576, duration_seconds=4.8, codec="avc1",
        size_bytes=len(video_bytes),
    )
    assert isinstance(first, FrameResult) and isinstance(second, FrameResult)
    assert (first.frame_index, first.timestamp_seconds, first.node_errors) == (0, 0.0, ())
    # Struct numbers are doubles; whole numbers come back as ints (documented in _events).
    assert first.result == {"people": [{"box": [1, 2, 30.5, 40], "track_id": 7, "label": "person"}]}
    assert type(first.result["people"][0]["track_id"]) is int
    assert type(first.result["people"][0]["box"][2]) is float
    assert (second.frame_index, second.timestamp_seconds) == (5, pytest.approx(0.2))
    assert second.node_errors == (NodeError("track", "bytetrack.track", grpc.StatusCode.INTERNAL, "tracker exploded"),)
    assert isinstance(summary, RunSummary)
    assert (summary.pipeline_id, summary.pipeline_version) == ("people_tracking_v1", "1.2.0")
    assert (summary.frames_processed, summary.frames_with_errors, summary.frames_in_video) == (2, 1, 119)
    assert (summary.wall_time_seconds, summary.decode_time_seconds) == (1.75, 0.25)
    assert [(t.node_id, t.calls, t.total_seconds, t.errors) for t in summary.node_timings] == [
        ("detect", 2, 1.2, 0),
        ("track", 2, 0.05, 1),
    ]
    assert summary.node_timings[0].seconds_per_call == pytest.approx(0.6)


def test_events_arrive_while_the_run_goes_on_and_closing_cancels_it(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [
        AcknowledgeUpload(),
        video_info_response(),
        frame_response(0, 25.0, {"motion": 0.1}),
        WaitForCancellation(timeout_seconds=20),
    ]

    stream = client.upload_and_run(video_path, "motion_v1")
    received = [next(stream), next(stream), next(stream)]
    # The server is still blocked after frame 0, so these came before the call ended.
    assert not servicer.cancelled.is_set()
    stream.close()

    assert isinstance(received[2], FrameResult)
    assert servicer.cancelled.wait(timeout=10)
    assert list(stream) == []
    assert _open_descriptors_of(video_path) == 0


def test_leaving_the_with_block_early_cancels_the_call(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    servicer.run_script = [AcknowledgeUpload(), video_info_response(), WaitForCancellation(timeout_seconds=20)]

    with client.upload_and_run(video_path, "motion_v1") as stream:
        for event in stream:
            if isinstance(event, VideoOpened):
                break

    assert servicer.cancelled.wait(timeout=10)


def test_token_is_sent_as_bearer_authorization(target: str, servicer: FakeVideoPipelineServicer) -> None:
    servicer.required_token = "s3cret"

    with VideodagClient(target, token="s3cret") as client:
        assert [p.id for p in client.list_pipelines()] == ["motion_v1", "people_tracking_v1"]
    with VideodagClient(target, token="wrong") as client, pytest.raises(Unauthenticated) as raised:
        client.list_pipelines()

    assert servicer.metadata[0]["authorization"] == "Bearer s3cret"
    assert raised.value.reason == "BAD_TOKEN"


def test_client_from_a_channel_leaves_the_channel_open(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        with VideodagClient.from_channel(channel) as client:
            client.list_pipelines()
        # The caller owns the channel: it still works after the client is closed.
        assert VideodagClient.from_channel(channel).get_pipeline("motion_v1").version == "0.3.0"


@pytest.mark.parametrize("chunk_size", [0, -1, MAX_CHUNK_SIZE + 1])
def test_chunk_size_outside_the_message_limit_is_refused(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, chunk_size: int
) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        client.upload_and_run(video_path, "motion_v1", chunk_size=chunk_size)
    assert servicer.requests == []


def test_missing_file_fails_before_any_call(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        client.upload_and_run(tmp_path / "absent.mp4", "motion_v1")
    assert servicer.requests == []


def test_a_file_name_python_decoded_in_the_users_locale_is_sent_as_the_user_sees_it(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Latin-1 system `café.mp4` is Latin-1 bytes that Python decodes to "café.mp4": its
    bytes were read as UTF-8, and the job was named `caf\\ufffd.mp4`."""
    _script_successful_run(servicer)
    named = video_path.rename(video_path.with_name("café.mp4"))
    monkeypatch.setattr(os, "fsencode", lambda name: os.fspath(name).encode("latin-1"))  # as in such a locale

    list(client.upload_and_run(str(named), "motion_v1"))

    assert servicer.config.file_name == "café.mp4"


def test_a_file_opened_by_a_bytes_path_keeps_its_name(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, video_path: Path
) -> None:
    """`open(b"clip.mp4", "rb")`, as code that handles names as bytes opens files: the job was unnamed."""
    _script_successful_run(servicer)
    with open(os.fsencode(video_path), "rb") as opened:
        list(client.upload_and_run(opened, "motion_v1"))
    assert servicer.config.file_name == video_path.name
