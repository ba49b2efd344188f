"""UploadAndRun with `decode_during_upload` over a real server: results before the upload
ends, the same results as a stored upload, and upload failures that end the run with the
upload's own error and leave nothing behind."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hardening_support import CallOutcome, Request, chunks, config, decoder_processes, raw_call, wait_until
from harness import ServerFactory, ServerHarness

from fakes.media import write_container_variant
from videodag.v1 import video_pipeline_service_pb2_grpc
from videodag_client import FrameResult, RunSummary, UploadReceived, VideoOpened
from videodag_client._events import struct_to_dict
from videodag_service.video.background_upload import UPLOAD_THREAD_NAME

CHUNK = 32 * 1024


def _upload_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == UPLOAD_THREAD_NAME]


def _semaphores() -> set[str]:
    """multiprocessing's named semaphores on this machine (an Event under the forkserver makes five)."""
    return {path.name for path in Path("/dev/shm").glob("sem.mp-*")}


@pytest.fixture(autouse=True)
def no_semaphore_left() -> Iterator[None]:
    """Whatever a run used to signal its decoder is gone with the run, not left to the garbage collector."""
    before = _semaphores()
    yield
    assert wait_until(lambda: _semaphores() <= before), _semaphores() - before


def _assert_nothing_left(server: ServerHarness) -> None:
    assert server.uploads_left_after() == []
    assert wait_until(lambda: not _upload_threads()), _upload_threads()
    assert wait_until(lambda: not decoder_processes()), decoder_processes()


class HeldUpload:
    """Requests that send the video up to `hold_at` bytes, then wait for `release` before the rest."""

    def __init__(self, data: bytes, hold_at: int, **config_fields: object) -> None:
        self.data = data
        self.hold_at = hold_at
        self.release = threading.Event()
        self.sent_all = threading.Event()
        self._config = config(**{"declared_size_bytes": len(data), "decode_during_upload": True, **config_fields})

    def __iter__(self) -> Iterator[Request]:
        yield self._config
        yield from chunks(self.data[: self.hold_at], CHUNK)
        self.release.wait(60)
        yield from chunks(self.data[self.hold_at :], CHUNK)
        self.sent_all.set()


def test_the_first_results_come_back_before_the_upload_ends(server: ServerHarness, sample_clip: Path) -> None:
    data = sample_clip.read_bytes()
    upload = HeldUpload(data, hold_at=len(data) // 2, sha256=hashlib.sha256(data).hexdigest())
    stub_call = _start(server, upload)
    kinds: list[str] = []
    for response in stub_call:
        kind = response.WhichOneof("event")
        kinds.append(kind)
        if kind == "frame" and not upload.release.is_set():
            assert not upload.sent_all.is_set()
            upload.release.set()  # a frame came back while half the video was still unsent
    frames = [kind for kind in kinds if kind == "frame"]
    assert len(frames) == 120
    assert kinds[0] == "video_info" and kinds[1] == "frame"
    assert kinds.index("upload_received") > 1
    assert kinds[-1] == "summary"
    _assert_nothing_left(server)


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_results_are_those_of_a_stored_upload(make_server: ServerFactory, sample_clip: Path, isolation: str) -> None:
    server = make_server(decode_isolation=isolation)
    stored = list(server.client.upload_and_run(sample_clip, "frame_stats_v1"))
    during = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", decode_during_upload=True))

    def results(events: list[object]) -> list[tuple[int, dict]]:
        return [(e.frame_index, e.result) for e in events if isinstance(e, FrameResult)]

    assert len(results(stored)) == 120
    assert results(during) == results(stored)
    assert [e for e in during if isinstance(e, VideoOpened)] == [e for e in stored if isinstance(e, VideoOpened)]
    assert [e for e in during if isinstance(e, UploadReceived)] == [e for e in stored if isinstance(e, UploadReceived)]
    assert isinstance(during[-1], RunSummary) and during[-1].frames_processed == 120
    _assert_nothing_left(server)


def test_a_fragmented_mp4_returns_results_from_its_first_fragments(server: ServerHarness, tmp_path: Path) -> None:
    """The default decoder processes open a fragmented MP4 before its later fragments arrive:
    the same results as a stored upload, with the frame count reported unknown (0) when the
    video opens and counted in the summary."""
    video = write_container_variant(tmp_path, "fragmented.mp4")
    stored = list(server.client.upload_and_run(video, "frame_stats_v1"))
    data = video.read_bytes()
    upload = HeldUpload(data, hold_at=len(data) // 2)
    safety = threading.Timer(20, upload.release.set)  # no frame from the first half: finish anyway
    safety.start()
    first_frame_while_held: bool | None = None
    responses = []
    for response in _start(server, upload):
        responses.append(response)
        if response.HasField("frame") and first_frame_while_held is None:
            first_frame_while_held = not upload.release.is_set()
            upload.release.set()
    safety.cancel()
    assert first_frame_while_held, "no result came back while half the video was unsent"
    during = [(r.frame.frame_index, struct_to_dict(r.frame.result)) for r in responses if r.HasField("frame")]
    assert during == [(e.frame_index, e.result) for e in stored if isinstance(e, FrameResult)]
    assert len(during) == 150
    [stored_info] = [e for e in stored if isinstance(e, VideoOpened)]
    assert (stored_info.frame_count, responses[0].video_info.frame_count) == (150, 0)
    assert responses[-1].HasField("summary")
    assert responses[-1].summary.frames_in_video == 150
    _assert_nothing_left(server)


def test_a_file_with_its_index_at_the_end_still_runs(server: ServerHarness, sample_clip: Path) -> None:
    mov = sample_clip.parent / "pedestrians_120.mov"
    if not mov.is_file():  # the shared media folder has both; the committed copy only the .mp4
        mov = sample_clip
    events = list(server.client.upload_and_run(mov, "frame_stats_v1", decode_during_upload=True))
    assert len([e for e in events if isinstance(e, FrameResult)]) == 120
    assert isinstance(events[-1], RunSummary)
    _assert_nothing_left(server)


def test_without_a_declared_size_it_is_invalid(server: ServerHarness, sample_clip: Path) -> None:
    outcome = _raw(server, [config(decode_during_upload=True), *chunks(sample_clip.read_bytes())])
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "declared_size_bytes" in outcome.details and "decode_during_upload" in outcome.details
    assert outcome.responses == []
    _assert_nothing_left(server)


@pytest.mark.parametrize(
    ("sent", "config_fields", "problem"),
    [
        ("all", {"sha256": hashlib.sha256(b"other").hexdigest()}, "checksum mismatch"),
        ("half", {}, "size mismatch"),  # the run must not pass a truncated video off as whole
    ],
)
def test_an_upload_found_wrong_at_its_end_fails_the_run_after_its_frames(
    server: ServerHarness, sample_clip: Path, sent: str, config_fields: dict, problem: str
) -> None:
    data = sample_clip.read_bytes()
    fields = {"declared_size_bytes": len(data), "decode_during_upload": True, **config_fields}
    outcome = _raw(server, [config(**fields), *chunks(data if sent == "all" else data[: len(data) // 2])])
    assert outcome.code == grpc.StatusCode.DATA_LOSS
    assert problem in outcome.details
    assert not any(response.HasField("summary") for response in outcome.responses)
    _assert_nothing_left(server)


def test_more_bytes_than_declared_end_the_run_at_once(server: ServerHarness, sample_clip: Path) -> None:
    data = sample_clip.read_bytes()
    declared = len(data) // 2
    upload = HeldUpload(data, hold_at=len(data), declared_size_bytes=declared)
    upload.release.set()
    outcome = _raw(server, upload)
    assert outcome.code == grpc.StatusCode.DATA_LOSS
    assert f"{declared} bytes declared" in outcome.details
    _assert_nothing_left(server)


def test_a_client_that_cancels_mid_upload_leaves_nothing_behind(server: ServerHarness, sample_clip: Path) -> None:
    data = sample_clip.read_bytes()
    upload = HeldUpload(data, hold_at=len(data) // 2)
    call = _start(server, upload)
    for response in call:
        if response.HasField("frame"):
            break
    call.cancel()  # the decoder now waits for bytes that never come
    upload.release.set()
    _assert_nothing_left(server)


def test_a_run_failing_mid_upload_reports_its_error_while_the_client_still_sends(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    """The run ends (a frame limit) while half the upload is unsent: the client hears the
    run's error, not a hang, and the upload thread ends with the call."""
    server = make_server(max_video_frames=5)
    data = sample_clip.read_bytes()
    upload = HeldUpload(data, hold_at=len(data) // 2)
    started = time.monotonic()
    outcome = _raw(server, upload, timeout=30)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 20
    upload.release.set()
    _assert_nothing_left(server)


def _start(server: ServerHarness, requests: object) -> grpc.Future:
    channel = grpc.insecure_channel(server.target)
    stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
    return stub.UploadAndRun(iter(requests), timeout=60)  # type: ignore[call-overload]


def _raw(server: ServerHarness, requests: object, timeout: float = 60) -> CallOutcome:
    with grpc.insecure_channel(server.target) as channel:
        return raw_call(channel, requests, timeout=timeout)  # type: ignore[arg-type]
