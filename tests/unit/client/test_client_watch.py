"""`videodag watch` and `VideodagClient.watch_job` against a fake WatchJob: when to reconnect, and
resuming an interrupted watch into the same output file."""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fake_servicer import FakeVideoPipelineServicer, frame_response, rich_status, serving, summary_response

from fakes.waiting import wait_until
from videodag.v1 import job_pb2, video_pipeline_service_pb2
from videodag_client import Cancelled, FrameResult, Job, JobState, Unavailable, VideodagClient, VideodagError
from videodag_client.cli import _exit_codes, main
from videodag_client.cli.watch import ReconnectReport

JOB_ID = "job-1"


class WatchingServicer(FakeVideoPipelineServicer):
    """WatchJob over frames 0..frame_count-1: the job RUNNING, its frames after the one asked
    for, then the job SUCCEEDED; `fail_after` ends the first call with `fail_code` after that frame."""

    def __init__(self, frame_count: int = 5) -> None:
        super().__init__()
        self.frame_count = frame_count
        self.fail_after: int | None = None
        self.fail_code = grpc.StatusCode.INTERNAL
        self.fail_message = "the watch broke"
        self.fail_reason = ""
        self.watch_requests: list[video_pipeline_service_pb2.WatchJobRequest] = []

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        self.watch_requests.append(request)
        after = request.after_frame_index if request.HasField("after_frame_index") else -1
        yield video_pipeline_service_pb2.WatchJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))
        for index in range(after + 1, self.frame_count):
            yield video_pipeline_service_pb2.WatchJobResponse(frame=frame_response(index, 25.0, {"n": index}).frame)
            if index == self.fail_after:
                self.fail_after = None
                context.abort_with_status(rich_status(self.fail_code.value[0], self.fail_message,
                                                      reason=self.fail_reason))
        finished = _job(job_pb2.JOB_STATE_SUCCEEDED)
        finished.summary.CopyFrom(summary_response(self.frame_count).summary)
        yield video_pipeline_service_pb2.WatchJobResponse(job=finished)


def _job(state: int) -> job_pb2.Job:
    return job_pb2.Job(id=JOB_ID, state=state)


@pytest.fixture
def watching() -> WatchingServicer:
    return WatchingServicer()


@pytest.fixture
def watch_target(watching: WatchingServicer) -> Iterator[str]:
    with serving(watching) as address:
        yield address


def _frame_indexes(path: Path) -> list[int]:
    return [json.loads(line)["frame_index"] for line in path.read_text(encoding="utf-8").splitlines()]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_watch_of_an_unreachable_server_fails_at_once_instead_of_for_its_reconnect_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    assert main(["--server", target, "watch", JOB_ID, "-q"]) == _exit_codes.UNAVAILABLE
    assert time.monotonic() - started < 20, "the 300 s reconnect window is for a watch that got through"
    assert "error: UNAVAILABLE" in capsys.readouterr().err

    with VideodagClient(target) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            list(client.watch_job(JOB_ID, reconnect_window=300))
        assert time.monotonic() - started < 20


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_watch_that_got_through_still_reconnects_and_resumes(
    watching: WatchingServicer, watch_target: str, code: grpc.StatusCode
) -> None:
    """CANCELLED too: the server's cancel of a watch that read nothing for its read limit ended
    the watch as if its caller had cancelled it."""
    watching.fail_after, watching.fail_code = 1, code
    with VideodagClient(watch_target) as client, client.watch_job(JOB_ID, reconnect_window=30) as watch:
        events = list(watch)
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 1, 2, 3, 4]
    assert isinstance(events[-1], Job) and events[-1].state is JobState.SUCCEEDED
    assert watch.reconnects == 1
    assert watching.watch_requests[1].after_frame_index == 1


# What gRPC reports when a proxy between ends a stream (nginx, seen through its gRPC proxying):
# its error page while the server restarts, and the reset of its read timeout on a quiet stream.
_CUT_BY_A_PROXY = [
    (grpc.StatusCode.UNKNOWN, "Received http2 header with status: 502"),
    (grpc.StatusCode.UNKNOWN, "Stream removed (Data frame with END_STREAM flag received)"),
    (grpc.StatusCode.INTERNAL, "Stream removed (RST_STREAM on stream 1 with error code 2)"),
]


@pytest.mark.parametrize(("code", "message"), _CUT_BY_A_PROXY)
def test_a_watch_a_proxy_cut_reconnects_and_resumes(
    watching: WatchingServicer, watch_target: str, code: grpc.StatusCode, message: str
) -> None:
    """The README promises a watch that resumes by itself; behind nginx, a restarting server's
    watches ended UNKNOWN (the proxy's HTTP 502 page) and quiet ones INTERNAL (its read timeout)."""
    watching.fail_after, watching.fail_code, watching.fail_message = 1, code, message
    with VideodagClient(watch_target) as client, client.watch_job(JOB_ID, reconnect_window=30) as watch:
        events = list(watch)
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 1, 2, 3, 4]
    assert watch.reconnects == 1


@pytest.mark.parametrize(("code", "message"), [
    (grpc.StatusCode.UNKNOWN, "Received http2 header with status: 403"),  # the proxy refuses this caller
    (grpc.StatusCode.INTERNAL, "a plugin failed: Stream removed"),  # the server's own words carry a reason
])
def test_a_watch_ended_otherwise_by_a_proxy_or_the_server_is_not_resumed(
    watching: WatchingServicer, watch_target: str, code: grpc.StatusCode, message: str
) -> None:
    watching.fail_after, watching.fail_code, watching.fail_message = 1, code, message
    if "plugin" in message:
        watching.fail_reason = "INTERNAL"
    with (VideodagClient(watch_target) as client, client.watch_job(JOB_ID, reconnect_window=30) as watch,
          pytest.raises(VideodagError) as raised):
        list(watch)
    assert raised.value.code is code and watch.reconnects == 0


def test_a_resumed_watch_continues_the_part_file_an_interrupted_one_kept(
    watching: WatchingServicer, watch_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "res.jsonl"
    part = tmp_path / "res.jsonl.part"
    watching.fail_after = 2  # INTERNAL after frame 2: the first command fails, keeping 0, 1, 2

    assert main(["--server", watch_target, "watch", JOB_ID, "-o", str(output), "-q"]) == _exit_codes.SERVER_ERROR
    assert _frame_indexes(part) == [0, 1, 2]
    capsys.readouterr()

    # Resumed after frame 1: the kept frame 2 is dropped, as the server sends it again.
    assert main(["--server", watch_target, "watch", JOB_ID, "--after", "1", "-o", str(output), "-q"]) == 0
    assert _frame_indexes(output) == [0, 1, 2, 3, 4]
    assert not part.exists()
    said = capsys.readouterr().err
    assert f"continuing the partial results in {part}: kept 2 frames, the last frame 1" in said
    assert "warning" not in said

    # Resumed after frame 3 from a .part ending at frame 1: frame 2 would be in neither. Refused,
    # the .part kept as it was; resumed as the refusal says, nothing is missing.
    output.unlink()
    kept = "".join(json.dumps({"frame_index": i, "timestamp": 0, "result": {}}) + "\n" for i in (0, 1))
    part.write_text(kept)
    resumed_too_late = ["--server", watch_target, "watch", JOB_ID, "--after", "3", "-o", str(output), "-q"]
    assert main(resumed_too_late) == _exit_codes.USAGE
    said = capsys.readouterr().err
    assert f"error: {part} ends at frame 1, not 3: continued after frame 3, {output} would miss" in said
    assert "resume with --after 1 (the .part is kept as it is)" in said
    assert part.read_text() == kept and not output.exists()
    assert main(["--server", watch_target, "watch", JOB_ID, "--after", "1", "-o", str(output), "-q"]) == 0
    assert _frame_indexes(output) == [0, 1, 2, 3, 4]


def test_a_watch_without_after_starts_its_output_afresh(
    watch_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "res.jsonl"
    Path(f"{output}.part").write_text('{"frame_index": 0, "timestamp": 0, "result": {"stale": true}}\n')

    assert main(["--server", watch_target, "watch", JOB_ID, "-o", str(output), "-q"]) == 0
    assert _frame_indexes(output) == [0, 1, 2, 3, 4]
    assert "stale" not in output.read_text()
    assert "continuing" not in capsys.readouterr().err


def test_a_watch_into_the_file_stdout_is_redirected_to_keeps_the_summary_on_stderr(
    watch_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`watch -o FILE > FILE`: the finished FILE replaces the one stdout leads to."""
    output = tmp_path / "res.jsonl"
    with output.open("w", encoding="utf-8") as redirected:
        monkeypatch.setattr(sys, "stdout", redirected)
        assert main(["--server", watch_target, "watch", JOB_ID, "-o", str(output)]) == 0
    assert _frame_indexes(output) == [0, 1, 2, 3, 4]
    assert "5 processed" in capsys.readouterr().err


def test_a_resumed_watch_drops_a_line_cut_short_in_the_part_file(watch_target: str, tmp_path: Path) -> None:
    output = tmp_path / "res.jsonl"
    lines = [json.dumps({"frame_index": i, "timestamp": 0, "result": {"n": i}}) + "\n" for i in range(3)]
    Path(f"{output}.part").write_text("".join(lines) + '{"frame_index": 3, "timest')

    assert main(["--server", watch_target, "watch", JOB_ID, "--after", "2", "-o", str(output), "-q"]) == 0
    assert _frame_indexes(output) == [0, 1, 2, 3, 4]


def test_a_reconnecting_watch_says_so_once_an_outage(capsys: pytest.CaptureFixture[str]) -> None:
    """The client asks again every few tenths of a second: a server restarting for 3 s made the
    same line six times."""
    report = ReconnectReport(quiet=False)
    lost = Unavailable("connection refused")
    for _ in range(6):
        report(lost, 291)
    report(lost, 340)  # frames came in between: another outage
    report(lost, 340)
    report.heard_from_server()  # a job update, no frame: the next loss is another outage all the same
    report(lost, 340)
    assert capsys.readouterr().err.splitlines() == [
        "connection lost (UNAVAILABLE); resuming after frame 291",
        "connection lost (UNAVAILABLE); resuming after frame 340",
        "connection lost (UNAVAILABLE); resuming after frame 340",
    ]
    ReconnectReport(quiet=True)(lost, None)
    assert capsys.readouterr().err == ""


class _HeldWatch(WatchingServicer):
    """Sends the job and its first frame, then holds the stream open."""

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        self.watch_requests.append(request)
        yield video_pipeline_service_pb2.WatchJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))
        yield video_pipeline_service_pb2.WatchJobResponse(frame=frame_response(0, 25.0, {"n": 0}).frame)
        while context.is_active():
            time.sleep(0.05)


def test_a_watch_whose_borrowed_channel_its_owner_closes_ends_cancelled_without_reconnecting() -> None:
    """A CANCELLED the watch did not cause resumes it (the server's cancel of a slow reader), but
    not the one of a channel closed under it: it tried the closed channel again, and ended saying
    the client was closed, which it was not."""
    servicer = _HeldWatch()
    reconnects: list[object] = []
    with serving(servicer) as target:
        channel = grpc.insecure_channel(target)
        watch = VideodagClient.from_channel(channel).watch_job(
            JOB_ID, reconnect_window=30, on_reconnect=lambda error, after: reconnects.append(error))
        assert isinstance(next(watch), Job) and isinstance(next(watch), FrameResult)
        channel.close()
        with pytest.raises(Cancelled):
            next(watch)
    assert reconnects == [] and len(servicer.watch_requests) == 1


class ResendingServicer(WatchingServicer):
    """A server that answers a resumed watch from frame 0 again, whatever it was asked for."""

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        request.ClearField("after_frame_index")
        yield from super().WatchJob(request, context)


def test_frames_a_server_sends_again_after_a_reconnect_are_delivered_once() -> None:
    """Frames come in order: one at or before the last delivered is a resend, not a new frame."""
    resending = ResendingServicer()
    resending.fail_after, resending.fail_code = 2, grpc.StatusCode.UNAVAILABLE
    with serving(resending) as target, VideodagClient(target) as client, \
            client.watch_job(JOB_ID, reconnect_window=30) as watch:
        frames = [event.frame_index for event in watch if isinstance(event, FrameResult)]
    assert frames == [0, 1, 2, 3, 4]
    assert watch.reconnects == 1 and watch.last_frame_index == 4


class FullServicer(WatchingServicer):
    """A server that always says it watches its maximum, asking to be called again at once."""

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        self.watch_requests.append(request)
        context.abort_with_status(rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "full",
                                              reason="TOO_MANY_WATCHES", retry_after_seconds=0))
        yield from ()


def test_a_retry_hint_of_no_time_does_not_have_the_watch_call_again_and_again() -> None:
    """A hint of 0 s (or less) is no wait: the watch would call over a thousand times a second
    for its whole reconnect window. The doubling backoff is the least wait."""
    full = FullServicer()
    with serving(full) as target, VideodagClient(target) as client, \
            client.watch_job(JOB_ID, reconnect_window=2) as watch, pytest.raises(VideodagError) as ended:
        list(watch)
    assert ended.value.reason == "TOO_MANY_WATCHES"
    # Waits of 0.1, 0.2, 0.4 and 0.8 s fill the 2 s window (and 5 s at most after them).
    assert 3 <= len(full.watch_requests) <= 6, len(full.watch_requests)


class EndingEarlyServicer(WatchingServicer):
    """A server that ends the watch OK after frame 1, the job still RUNNING."""

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        yield video_pipeline_service_pb2.WatchJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))
        for index in (0, 1):
            yield video_pipeline_service_pb2.WatchJobResponse(frame=frame_response(index, 25.0, {"n": index}).frame)


def test_a_watch_the_server_ends_before_the_job_finished_is_not_called_a_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "res.jsonl"
    with serving(EndingEarlyServicer()) as target:
        assert main(["--server", target, "watch", JOB_ID, "-o", str(output), "-q"]) == _exit_codes.SERVER_ERROR
    said = capsys.readouterr().err
    assert f"error: INTERNAL: the server ended the watch before job {JOB_ID} finished (it was running after 0 " \
           "frames)" in said
    assert "CANCELLED" not in said
    assert _frame_indexes(Path(f"{output}.part")) == [0, 1]


class QuietServicer(WatchingServicer):
    """A long job: its watch sends the job, RUNNING, then nothing until cancelled (or 20 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = 0

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        self.watching += 1
        try:
            yield video_pipeline_service_pb2.WatchJobResponse(job=_job(job_pb2.JOB_STATE_RUNNING))
            end = time.monotonic() + 20
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
        finally:
            self.watching -= 1


def test_a_watch_closed_from_another_thread_as_it_opens_its_call_ends_and_cancels_that_call() -> None:
    """`close()` (a stop button, a timeout thread, an asyncio task's cancel) found no call to cancel
    while one was being opened: that call went on, the thread iterating was held until the job
    ended, and the server kept a watch slot as long."""
    quiet = QuietServicer()
    with serving(quiet) as target, VideodagClient(target) as client:
        watch = client.watch_job(JOB_ID)
        opening, closed = threading.Event(), threading.Event()
        open_call = watch._open_call

        def open_as_it_is_closed(after_frame_index: int | None) -> Any:
            opening.set()
            closed.wait(5)
            return open_call(after_frame_index)

        watch._open_call = open_as_it_is_closed
        events: list[object] = []
        reader = threading.Thread(target=lambda: events.extend(watch), daemon=True)
        reader.start()
        assert opening.wait(5)
        watch.close()
        closed.set()
        reader.join(5)
        assert not reader.is_alive(), "the thread iterating the closed watch still waits"
        assert wait_until(lambda: quiet.watching == 0, timeout=5), "the call opened as the watch closed goes on"


class _TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class CountedServicer(WatchingServicer):
    """WatchingServicer whose jobs say how many frames they will have."""

    def WatchJob(
        self, request: video_pipeline_service_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[video_pipeline_service_pb2.WatchJobResponse]:
        for response in super().WatchJob(request, context):
            if response.WhichOneof("event") == "job":
                response.job.progress.frames_total = self.frame_count
            yield response


@pytest.mark.parametrize("quiet", [False, True])
def test_watch_shows_a_frames_bar_on_a_terminal_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    terminal = _TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)
    with serving(CountedServicer()) as target:
        arguments = ["--server", target, "watch", JOB_ID, "-o", str(tmp_path / "job.jsonl")]
        assert main(arguments + (["--quiet"] if quiet else [])) == _exit_codes.SUCCESS
    shown = terminal.getvalue()
    if quiet:
        assert shown == ""
    else:
        assert "frames:" in shown and "/5 [" in shown  # sized by the job's frames_total
