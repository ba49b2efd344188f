"""Stage overlap: the bounded hand-off, the read-ahead thread, and the decode thread of
`VideoFilePipelineService` on real files: order, backpressure, errors, and that every exit
path stops the thread and releases the capture."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import pytest

from fakes.capture import CaptureSpy, spy_on_captures
from fakes.fake_dag import DEFAULT_PIPELINE, RunningDagService
from fakes.media import FRAME_SIZE, read_frame_index
from fakes.waiting import wait_until
from videodag_service.errors import VideoTooLarge
from videodag_service.video import FrameProcessed, RunFinished, VideoFilePipelineService, VideoLimits, VideoOpened
from videodag_service.video.capture import Capture
from videodag_service.video.file_pipeline import DECODE_THREAD_NAME
from videodag_service.video.pipelining import BoundedHandoff, HandoffClosed, read_ahead

FRAME_BYTES = FRAME_SIZE[0] * FRAME_SIZE[1] * 3


def _threads_named(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]




class CountingSource:
    """A generator source that records how far it got, in which thread, and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None, error: BaseException | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.error = error
        self.produced = 0
        self.closed_in: str | None = None
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        try:
            for item in range(self.count):
                self.threads.add(threading.current_thread().name)
                if item == self.fail_at:
                    assert self.error is not None
                    raise self.error
                self.produced += 1
                yield item
        finally:
            self.closed_in = threading.current_thread().name


# The hand-off -------------------------------------------------------------------------


def test_handoff_blocks_the_producer_at_capacity_until_the_consumer_takes_an_item() -> None:
    handoff: BoundedHandoff[bytes] = BoundedHandoff(10, weigh=len)
    handoff.put(b"12345")
    handoff.put(b"12345")
    third_added = threading.Event()
    producer = threading.Thread(target=lambda: (handoff.put(b"abc"), third_added.set()))
    producer.start()
    assert not third_added.wait(0.2)
    assert handoff.weight == 10
    assert handoff.get() == b"12345"
    assert third_added.wait(5)
    producer.join()
    assert handoff.weight == 8


def test_handoff_admits_one_item_heavier_than_its_capacity_when_empty() -> None:
    handoff: BoundedHandoff[bytes] = BoundedHandoff(4, weigh=len)
    handoff.put(b"a much larger item")
    handoff.finish()
    assert handoff.get() == b"a much larger item"
    assert handoff.get() is BoundedHandoff.done


def test_handoff_close_wakes_a_blocked_producer_and_a_blocked_consumer() -> None:
    full: BoundedHandoff[int] = BoundedHandoff(1)
    full.put(1)
    outcome: list[str] = []

    def put_more() -> None:
        try:
            full.put(2)
        except HandoffClosed:
            outcome.append("closed")

    producer = threading.Thread(target=put_more)
    producer.start()
    empty: BoundedHandoff[int] = BoundedHandoff(1)
    consumer = threading.Thread(target=lambda: outcome.append("done" if empty.get() is empty.done else "item"))
    consumer.start()
    time.sleep(0.05)
    full.close()
    empty.close()
    producer.join(5)
    consumer.join(5)
    assert sorted(outcome) == ["closed", "done"]


def test_handoff_delivers_the_items_before_the_producer_error_then_the_error() -> None:
    handoff: BoundedHandoff[int] = BoundedHandoff(5)
    error = OSError("disk gone")
    handoff.put(1)
    handoff.put(2)
    handoff.finish(error)
    assert [handoff.get(), handoff.get()] == [1, 2]
    with pytest.raises(OSError) as raised:
        handoff.get()
    assert raised.value is error


def test_handoff_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedHandoff(0)


# read_ahead -------------------------------------------------------------------------------


def test_read_ahead_yields_everything_in_order_from_another_thread_and_cleans_up() -> None:
    source = CountingSource(500)
    with read_ahead(source, 8, thread_name="test-read-ahead") as items:
        assert list(items) == list(range(500))
    assert source.threads == {"test-read-ahead"}
    assert source.closed_in == "test-read-ahead"
    assert _threads_named("test-read-ahead") == []


def test_read_ahead_says_whether_the_next_item_is_there_without_waiting_for_it() -> None:
    second_allowed = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        second_allowed.wait(5)
        yield 2

    with read_ahead(source(), 8, thread_name="test-read-ahead") as items:
        assert wait_until(items.ready)
        assert next(items) == 1
        time.sleep(0.05)
        assert not items.ready()  # the producer is still working on the second item
        second_allowed.set()
        assert wait_until(items.ready)
        assert next(items) == 2
        assert wait_until(items.ready)  # the end is known: next() would not wait either
        assert list(items) == []


def test_read_ahead_stays_within_capacity_behind_a_slow_consumer() -> None:
    source = CountingSource(60)
    lead: list[int] = []
    with read_ahead(source, 4, thread_name="test-read-ahead") as items:
        for consumed, _item in enumerate(items, start=1):
            time.sleep(0.002)
            lead.append(source.produced - consumed)
    # At most `capacity` items wait in the hand-off, plus the one the producer holds while blocked.
    assert max(lead) <= 4 + 1
    assert max(lead) >= 3  # it did run ahead


def test_read_ahead_raises_the_source_error_after_the_items_before_it() -> None:
    error = KeyError("frame 7 is broken")
    source = CountingSource(20, fail_at=7, error=error)
    received: list[int] = []
    with pytest.raises(KeyError) as raised, read_ahead(source, 3, thread_name="test-read-ahead") as items:
        for item in items:
            received.append(item)
    assert raised.value is error
    assert received == list(range(7))
    assert _threads_named("test-read-ahead") == []


@pytest.mark.parametrize("exit_by", ["break", "error"])
def test_leaving_read_ahead_early_stops_a_blocked_producer_and_closes_the_source(exit_by: str) -> None:
    source = CountingSource(10_000)
    expected_error = pytest.raises(RuntimeError) if exit_by == "error" else nullcontext()
    with expected_error, read_ahead(source, 2, thread_name="test-read-ahead") as items:
        next(items)
        assert wait_until(lambda: source.produced >= 3)  # the producer is now blocked: hand-off full
        if exit_by == "error":
            raise RuntimeError("the consumer failed")
    assert source.closed_in == "test-read-ahead"
    assert source.produced <= 4
    assert _threads_named("test-read-ahead") == []


# The decode thread of VideoFilePipelineService, on real files ------------------------------


class GatedRun:
    """A run whose process() waits for a condition before answering, and records its thread."""

    def __init__(self, gate: Any = None, delay_seconds: float = 0.0) -> None:
        self.gate = gate
        self.delay_seconds = delay_seconds
        self.frames: list[int] = []
        self.threads: set[str] = set()
        self.gate_opened: list[bool] = []

    def process(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        if self.gate is not None and not self.frames:
            self.gate_opened.append(wait_until(self.gate))
        time.sleep(self.delay_seconds)
        self.frames.append(payload["frame_index"])
        return {"content_index": read_frame_index(payload["image"])}

    def node_timings(self) -> list[Any]:
        return []


class GatedDag:
    def __init__(self, run: GatedRun) -> None:
        self.run = run
        self.closed = 0

    def open_run(self, pipeline_id: str) -> Any:
        dag = self

        class _Context:
            def __enter__(self) -> GatedRun:
                return dag.run

            def __exit__(self, *exc_info: object) -> None:
                dag.closed += 1

        return _Context()


def test_frames_are_decoded_in_another_thread_while_the_dag_works_on_an_earlier_one(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(40)
    spies = spy_on_captures(monkeypatch)
    # The first frame's DAG call only returns once later frames were decoded: a service that
    # decoded and ran the DAG one after the other in one thread would wait here in vain.
    run = GatedRun(gate=lambda: spies[0].retrieves >= 4)
    results = VideoFilePipelineService(GatedDag(run)).run_on_file(DEFAULT_PIPELINE, path)
    assert run.gate_opened == [True]
    assert [item["result"]["content_index"] for item in results] == list(range(40))
    assert DECODE_THREAD_NAME not in run.threads
    assert spies[0].released
    assert _threads_named(DECODE_THREAD_NAME) == []


def test_a_slow_dag_holds_the_decoder_back_to_the_read_ahead_budget(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(60)
    spies = spy_on_captures(monkeypatch)
    run = GatedRun(delay_seconds=0.005)
    decoded_ahead: list[int] = []
    service = VideoFilePipelineService(GatedDag(run), decode_ahead_bytes=3 * FRAME_BYTES)
    for event in service.stream_run(DEFAULT_PIPELINE, path):
        if isinstance(event, FrameProcessed):
            decoded_ahead.append(spies[0].retrieves - len(run.frames))
    assert len(decoded_ahead) == 60
    # Three frames wait in the hand-off, one more is held by the blocked decoder.
    assert max(decoded_ahead) <= 3 + 1
    assert spies[0].released


def test_closing_the_event_stream_stops_the_decoder_thread_and_releases_the_capture(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(300)
    spies = spy_on_captures(monkeypatch)
    dag = RunningDagService()
    events = VideoFilePipelineService(dag, decode_ahead_bytes=2 * FRAME_BYTES).stream_run(DEFAULT_PIPELINE, path)
    assert isinstance(next(events), VideoOpened)
    assert isinstance(next(events), FrameProcessed)
    assert wait_until(lambda: spies[0].retrieves >= 3)  # the decoder is ahead, blocked on a full hand-off
    assert _threads_named(DECODE_THREAD_NAME)
    events.close()
    assert _threads_named(DECODE_THREAD_NAME) == []
    assert spies[0].released
    assert spies[0].retrieves <= 1 + 2 + 1
    assert dag.ledger.exit_errors == [GeneratorExit]


def test_a_dag_error_stops_the_decoder_thread_and_releases_the_capture(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(300)
    spies = spy_on_captures(monkeypatch)
    error = RuntimeError("detector crashed")
    dag = RunningDagService(failures={5: error})
    with pytest.raises(RuntimeError) as raised:
        VideoFilePipelineService(dag).run_on_file(DEFAULT_PIPELINE, path)
    assert raised.value is error
    assert _threads_named(DECODE_THREAD_NAME) == []
    assert spies[0].released and spies[0].retrieves < 300
    assert dag.ledger.exit_errors == [RuntimeError]


def test_a_decode_error_reaches_the_caller_after_the_frames_before_it(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A header that under-reports its frames passes the up-front check; the decoder thread
    # then meets the limit on frame 10 and the error must surface, in order, in the caller.
    real_probe = Capture.probe
    monkeypatch.setattr(Capture, "probe", lambda self: dataclasses.replace(real_probe(self), frame_count=5))
    path = make_video(30)
    spies = spy_on_captures(monkeypatch)
    dag = RunningDagService()
    service = VideoFilePipelineService(dag, limits=VideoLimits(max_frames_total=10))
    frames: list[int] = []
    with pytest.raises(VideoTooLarge, match="more than 10 frames"):
        for event in service.stream_run(DEFAULT_PIPELINE, path):
            if isinstance(event, FrameProcessed):
                frames.append(event.frame_index)
    assert frames == list(range(10))
    assert _threads_named(DECODE_THREAD_NAME) == []
    assert spies[0].released
    assert dag.ledger.exit_errors == [VideoTooLarge]


def test_the_decode_thread_owns_the_capture_between_open_and_release(
    make_video, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[str]] = {"grab": set(), "retrieve": set(), "release": set()}
    real_grab, real_retrieve, real_release = CaptureSpy.grab, CaptureSpy.retrieve, CaptureSpy.release

    def recording(name: str, method: Any) -> Any:
        def call(self: CaptureSpy, *args: Any) -> Any:
            threads[name].add(threading.current_thread().name)
            return method(self, *args)
        return call

    monkeypatch.setattr(CaptureSpy, "grab", recording("grab", real_grab))
    monkeypatch.setattr(CaptureSpy, "retrieve", recording("retrieve", real_retrieve))
    monkeypatch.setattr(CaptureSpy, "release", recording("release", real_release))
    spies = spy_on_captures(monkeypatch)
    events = list(VideoFilePipelineService(RunningDagService()).stream_run(DEFAULT_PIPELINE, make_video(20)))
    assert isinstance(events[-1], RunFinished) and events[-1].summary.frames_processed == 20
    assert events[-1].summary.decode_seconds > 0
    assert threads["grab"] == threads["retrieve"] == {DECODE_THREAD_NAME}
    assert threads["release"] == {threading.current_thread().name}
    assert spies[0].released


def test_decode_ahead_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="decode_ahead_bytes"):
        VideoFilePipelineService(RunningDagService(), decode_ahead_bytes=0)
