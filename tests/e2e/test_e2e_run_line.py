"""Runs over the server's slots wait in line, first come first served: a slot freed goes to the
call that has waited longest, never to whoever calls first (the caller that just finished,
which shut out callers waiting out their retry hints for as long as others kept calling)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from harness import ServerFactory, ServerHarness
from test_e2e_metrics import free_port, scrape

from fakes.waiting import wait_until
from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import (
    Cancelled,
    NotFound,
    ResourceExhausted,
    RunSummary,
    Unavailable,
    VideodagClient,
    VideodagError,
)
from videodag_client._errors import from_grpc_error
from videodag_service.call_slots import RunTurn


class _Caller(threading.Thread):
    """One UploadAndRun in a thread of its own: when its first event came, and how it ended."""

    def __init__(self, client: VideodagClient, video: Path, pipeline: str = "frame_stats_v1") -> None:
        super().__init__(daemon=True)
        self._run = lambda: client.upload_and_run(video, pipeline)
        self.first_event_at: float | None = None
        self.error: VideodagError | None = None
        self.summary: RunSummary | None = None

    def run(self) -> None:
        try:
            for event in self._run():
                if self.first_event_at is None:
                    self.first_event_at = time.monotonic()
                if isinstance(event, RunSummary):
                    self.summary = event
        except VideodagError as error:
            self.error = error


def _full(make_server: ServerFactory, video: Path, **settings: object) -> tuple[ServerHarness, Callable[[], None]]:
    """A server started with `settings` whose every run slot (one, unless told) is taken by a run of
    `video`, and the function that ends that run."""
    server = make_server(**{"max_concurrent_runs": 1, **settings})
    return server, _busy(server, video)


def _in_line(server: ServerHarness, video: Path) -> _Caller:
    """A run of `video` started, and waiting in the line of a full `server`."""
    caller = _Caller(server.client, video)
    caller.start()
    assert wait_until(lambda: server.running.run_slots.waiting == 1)
    return caller


def _busy(server: ServerHarness, video: Path) -> Callable[[], None]:
    """A run holding a slot until the returned function closes it (a 1000-frame video of the
    "slow" pipeline runs 50 s: longer than any of these tests on a loaded machine)."""
    stream = server.client.upload_and_run(video, "slow")
    next(stream)
    return stream.close


def test_a_freed_slot_goes_to_the_call_that_waited_longest_and_the_line_has_a_cap(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video, max_waiting_runs=2)
    first, second = _Caller(server.client, make_video(3)), _Caller(server.client, make_video(3))
    first.start()
    assert wait_until(lambda: server.running.run_slots.waiting == 1)
    second.start()
    assert wait_until(lambda: server.running.run_slots.waiting == 2)

    with pytest.raises(ResourceExhausted) as full:
        list(server.client.upload_and_run(make_video(3), "frame_stats_v1"))
    assert full.value.reason == "TOO_MANY_RUNS"
    assert full.value.message == ("the server already runs its maximum of 1 video and 2 calls waiting; "
                                  "retry shortly")
    assert full.value.retry_after is not None and full.value.retry_after >= 1.0
    assert full.value.metadata == {"max_concurrent_runs": "1", "max_waiting_runs": "2"}  # both caps it met

    release()
    for caller in (first, second):
        caller.join(timeout=60)
        assert caller.error is None and caller.summary is not None and caller.summary.frames_processed == 3
    assert first.first_event_at is not None and second.first_event_at is not None
    assert first.first_event_at < second.first_event_at
    assert server.running.run_slots.waiting == 0 and server.running.run_slots.active == 0
    assert server.uploads_left_after() == []


def test_a_call_that_waits_its_time_in_line_is_refused_with_a_hint_of_the_wait(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video, run_wait_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as waited:
        list(server.client.upload_and_run(make_video(3), "frame_stats_v1"))
    assert 1.0 <= time.monotonic() - started < 10
    assert waited.value.reason == "TOO_MANY_RUNS"
    assert re.fullmatch(r"no run slot came free in 1\.\d s in line \(the server runs at most 1 video\); retry shortly",
                        waited.value.message), waited.value.message
    assert waited.value.retry_after is not None and waited.value.retry_after >= 1.0
    assert server.running.run_slots.waiting == 0
    release()
    assert server.uploads_left_after() == []


def test_a_call_whose_deadline_comes_before_a_slot_is_refused_with_a_hint_not_timed_out(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    """With the default line (30 s), a client with a 3 s deadline got DEADLINE_EXCEEDED: nothing
    to say the server was full, nor when to come back."""
    server, release = _full(make_server, thousand_frame_video, run_wait_seconds=30.0)
    with pytest.raises(ResourceExhausted) as refused:
        list(server.client.upload_and_run(make_video(3), "frame_stats_v1", timeout=3))
    assert refused.value.reason == "TOO_MANY_RUNS"
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1.0
    assert server.running.run_slots.waiting == 0
    release()
    assert server.uploads_left_after() == []


def test_a_config_the_server_refuses_is_refused_at_once_in_line(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video)
    started = time.monotonic()
    with pytest.raises(NotFound):
        list(server.client.upload_and_run(make_video(3), "no_such_pipeline"))
    assert time.monotonic() - started < 5  # the line's wait is 30 s
    assert server.running.run_slots.waiting == 0
    release()


def test_a_call_cancelled_in_line_leaves_it(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video)
    waiting = server.client.upload_and_run(make_video(3), "frame_stats_v1")
    assert wait_until(lambda: server.running.run_slots.waiting == 1)
    waiting.close()  # the client leaves the line
    assert wait_until(lambda: server.running.run_slots.waiting == 0)
    release()
    # The slot is free for the next caller, not given to the call that left.
    summary = list(server.client.upload_and_run(make_video(3), "frame_stats_v1"))[-1]
    assert isinstance(summary, RunSummary) and summary.frames_processed == 3
    assert server.uploads_left_after() == []


def test_calls_in_line_are_told_to_go_elsewhere_when_the_server_shuts_down(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video)
    waiting = _in_line(server, make_video(3))
    stopper = threading.Thread(target=server.running.stop, args=(5.0,))
    stopper.start()
    waiting.join(timeout=30)
    assert isinstance(waiting.error, Unavailable) and waiting.error.reason == "SERVER_DRAINING"
    release()
    stopper.join(timeout=30)
    assert server.leftover_uploads() == []
    # The call in line never ran: only the run it waited behind counts (as its handler unwinds).
    def runs() -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(sample.labels.items())): sample.value
                for family in server.running.metrics.registry.collect() if family.name == "videodag_runs"
                for sample in family.samples if sample.name == "videodag_runs_total"}

    assert wait_until(lambda: runs() == {(("pipeline", "slow"), ("status", "CANCELLED")): 1.0}), runs()


def test_the_line_is_a_queue_in_the_metrics_and_its_refusals_are_not_runs(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    port = free_port()
    server, release = _full(make_server, thousand_frame_video, metrics_port=port, max_waiting_runs=1)
    waiting = _in_line(server, make_video(3))
    with pytest.raises(ResourceExhausted):
        list(server.client.upload_and_run(make_video(3), "frame_stats_v1"))
    during = scrape(port)
    release()
    waiting.join(timeout=60)

    assert during[("videodag_queue_depth", (("queue", "runs"),))] == 1
    def runs(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[object, float]:
        return {labels: value for (name, labels), value in metrics.items() if name == "videodag_runs_total"}

    # The closed run is counted as its handler unwinds, after its slot has gone to the next.
    assert wait_until(lambda: runs(scrape(port)) == {(("pipeline", "frame_stats_v1"), ("status", "OK")): 1.0,
                                                     (("pipeline", "slow"), ("status", "CANCELLED")): 1.0}), (
        runs(scrape(port)), waiting.is_alive(), waiting.error, waiting.summary)
    after = scrape(port)
    assert after[("videodag_queue_depth", (("queue", "runs"),))] == 0
    calls = after[("videodag_grpc_calls_total", (("code", "RESOURCE_EXHAUSTED"),
                                                  ("method", "/videodag.v1.VideoPipelineService/UploadAndRun")))]
    assert calls == 1


def test_a_run_that_waited_in_line_reports_its_own_wall_time(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video)
    waiting = _in_line(server, make_video(3))
    time.sleep(1.5)  # the wait in line the wall time must leave out
    release()
    waiting.join(timeout=60)
    assert waiting.summary is not None and waiting.summary.wall_time_seconds < 1.0


def test_an_upload_declared_over_the_limit_is_refused_at_once_in_line(
    make_server: ServerFactory, make_video, thousand_frame_video: Path
) -> None:
    server, release = _full(make_server, thousand_frame_video)
    too_large = server.running.settings.max_upload_bytes + 1
    request = video_pipeline_service_pb2.UploadAndRunRequest(
        config=run_pb2.RunConfig(pipeline_id="frame_stats_v1", declared_size_bytes=too_large))
    started = time.monotonic()
    with grpc.insecure_channel(server.target) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.UploadAndRun(iter([request]), timeout=60))
    assert time.monotonic() - started < 5  # not after the line's 30 s
    error = from_grpc_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPLOAD_TOO_LARGE")
    assert server.running.run_slots.waiting == 0
    release()


def test_a_call_its_client_cancels_in_line_counts_as_a_cancelled_run(
    make_server: ServerFactory, make_video, thousand_frame_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It counted in the calls only, as a TOO_MANY_RUNS refusal its client never heard, where the
    README counts every cancel in the runs (one cancelled before its config was, as 'unknown')."""
    server, release = _full(make_server, thousand_frame_video)
    config_read = threading.Event()  # the call's place in line is taken before: its wait begins after
    wait_for_a_slot = RunTurn.wait

    def waited_for_after_its_config(turn: RunTurn) -> None:
        config_read.set()
        wait_for_a_slot(turn)

    monkeypatch.setattr(RunTurn, "wait", waited_for_after_its_config)
    stream = server.client.upload_and_run(make_video(3), "frame_stats_v1")
    ended: list[BaseException] = []

    def first_event() -> None:
        try:
            next(stream)
        except Cancelled as cancelled:
            ended.append(cancelled)

    waiting = threading.Thread(target=first_event, daemon=True)
    waiting.start()
    assert config_read.wait(timeout=30)
    stream.close()
    waiting.join(timeout=30)
    assert len(ended) == 1, "the caller's own cancel"
    assert wait_until(lambda: server.running.run_slots.waiting == 0)

    def runs() -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(sample.labels.items())): sample.value
                for family in server.running.metrics.registry.collect() if family.name == "videodag_runs"
                for sample in family.samples if sample.name == "videodag_runs_total"}

    assert wait_until(lambda: runs() == {(("pipeline", "frame_stats_v1"), ("status", "CANCELLED")): 1.0}), runs()
    release()
    assert server.uploads_left_after() == []
