"""The servicer in process (grpcio-testing): translation of requests, events and errors."""

from __future__ import annotations

import logging
import textwrap
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import grpc_testing
import pytest
from google.rpc import error_details_pb2

from fakes.fake_plugins import Recorder, make_test_plugin
from fakes.waiting import wait_until
from videodag.v1 import run_pb2, video_pipeline_service_pb2
from videodag_service.call_slots import RunSlots
from videodag_service.call_watch import CallWatch
from videodag_service.dag import DagPipelineService, PluginRegistry, load_pipeline_folder
from videodag_service.jobs import JobConfig, JobService, open_job_service
from videodag_service.servicer import PipelinesTooLarge, VideoPipelineServicer
from videodag_service.settings import Settings

SERVICE = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"]
Request = video_pipeline_service_pb2.UploadAndRunRequest


@pytest.fixture
def test_server(tmp_path: Path) -> Iterator[tuple[grpc_testing.Server, Path]]:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "counting.yaml").write_text(textwrap.dedent("""
        id: counting
        version: "3"
        nodes:
          - id: count
            plugin: test.counter
            params: {fail_on: [4]}
            inputs: {index: frame.index}
        outputs:
          seen: count.count
    """))
    dag = DagPipelineService(load_pipeline_folder(pipelines, PluginRegistry([make_test_plugin(Recorder())])))
    settings = Settings(temp_dir=tmp_path / "uploads")
    with job_service(dag, tmp_path / "data") as jobs:
        servicer = VideoPipelineServicer(dag, settings, RunSlots(2), jobs)
        yield grpc_testing.server_from_dictionary({SERVICE: servicer}, grpc_testing.strict_real_time()), tmp_path
        servicer.close()


@contextmanager
def job_service(dag: DagPipelineService, data_dir: Path) -> Iterator[JobService]:
    """The embedded job service every servicer is built with, closed at the end of the block."""
    jobs = open_job_service(JobConfig(data_dir=data_dir, max_upload_bytes=10**7, workers=1), dag)
    try:
        yield jobs
    finally:
        jobs.close()


def upload(server: grpc_testing.Server, requests: Iterable[Request]
           ) -> tuple[list[video_pipeline_service_pb2.UploadAndRunResponse], grpc.StatusCode, str, object]:
    rpc = server.invoke_stream_stream(SERVICE.methods_by_name["UploadAndRun"], (), None)
    for request in requests:
        rpc.send_request(request)
    rpc.requests_closed()
    responses = []
    while True:
        try:
            responses.append(rpc.take_response())
        except ValueError:
            break
    trailing, code, details = rpc.termination()
    return responses, code, details, trailing


def video_requests(path: Path, pipeline_id: str = "counting") -> list[Request]:
    data = path.read_bytes()
    return [
        Request(config=run_pb2.RunConfig(pipeline_id=pipeline_id, file_name=path.name)),
        *(Request(chunk=data[i:i + 4096]) for i in range(0, len(data), 4096)),
    ]


def test_events_come_in_contract_order(test_server: tuple[grpc_testing.Server, Path], make_video) -> None:
    server, tmp_path = test_server
    responses, code, _, _ = upload(server, video_requests(make_video(4)))
    assert code == grpc.StatusCode.OK
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds == ["upload_received", "video_info", "frame", "frame", "frame", "frame", "summary"]
    assert [r.frame.frame_index for r in responses[2:6]] == [0, 1, 2, 3]
    assert responses[3].frame.result["seen"] == 2
    summary = responses[-1].summary
    assert (summary.pipeline_id, summary.pipeline_version, summary.frames_processed) == ("counting", "3", 4)
    assert list((tmp_path / "uploads").iterdir()) == []


def test_plugin_failure_becomes_internal(test_server: tuple[grpc_testing.Server, Path], make_video) -> None:
    # grpcio-testing drops trailing metadata on abort; the rich details are checked end to end.
    server, tmp_path = test_server
    responses, code, details, _ = upload(server, video_requests(make_video(8)))
    assert code == grpc.StatusCode.INTERNAL
    assert "node 'count' (test.counter) failed on frame 4" in details
    assert [r.frame.frame_index for r in responses if r.WhichOneof("event") == "frame"] == [0, 1, 2, 3]
    assert list((tmp_path / "uploads").iterdir()) == []


def test_status_from_error_carries_error_info_bad_request_and_retry_info() -> None:
    from videodag_service.convert import status_from_error
    from videodag_service.errors import ErrorDetails, FieldViolation, InvalidOptions, TooManyRuns

    status = status_from_error(InvalidOptions([FieldViolation("config.options.max_frames", "must not be negative")]))
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad_request)
    assert (info.reason, info.domain) == ("INVALID_OPTIONS", "videodag.dev")
    assert bad_request.field_violations[0].field == "config.options.max_frames"
    retry = error_details_pb2.RetryInfo()
    status = status_from_error(TooManyRuns("busy", ErrorDetails(retry_after_seconds=1.5)))
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000


@pytest.mark.parametrize("count", [3, 12])
def test_the_known_pipeline_ids_a_program_reads_are_whole_ids_with_their_count(count: int) -> None:
    """Twelve long ids do not fit in a detail field: cut mid-id, the list ended in an id that
    does not exist, and nothing said it was short."""
    from videodag_service.convert import status_from_error
    from videodag_service.errors import PipelineNotFound

    known = [f"customer_pipeline_with_a_long_name_number_{n:02d}" for n in range(count)]
    status = status_from_error(PipelineNotFound("nosuch", known))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    listed = info.metadata["known_pipeline_ids"].split(",")
    assert set(listed) <= set(known)
    assert listed == known[: len(listed)]
    assert (len(listed) == count) == (count == 3)
    assert info.metadata["known_pipeline_count"] == str(count)
    assert all(pipeline_id in status.message for pipeline_id in known)


def test_unknown_pipeline_is_refused_before_the_upload(test_server: tuple[grpc_testing.Server, Path]) -> None:
    server, tmp_path = test_server
    responses, code, details, _ = upload(server, [Request(config=run_pb2.RunConfig(pipeline_id="nope"))])
    assert responses == []
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "unknown pipeline 'nope'; known pipelines: counting"
    assert not (tmp_path / "uploads").exists() or list((tmp_path / "uploads").iterdir()) == []


def test_list_pipelines_shows_the_graph(test_server: tuple[grpc_testing.Server, Path]) -> None:
    server, _ = test_server
    rpc = server.invoke_unary_unary(
        SERVICE.methods_by_name["ListPipelines"], (), video_pipeline_service_pb2.ListPipelinesRequest(), None
    )
    response, _, code, _ = rpc.termination()
    assert code == grpc.StatusCode.OK
    (pipeline,) = response.pipelines
    assert pipeline.id == "counting"
    (node,) = pipeline.nodes
    assert (node.id, node.plugin, node.stateful) == ("count", "test.counter", True)
    assert [(i.name, i.source) for i in node.inputs] == [("index", "frame.index")]
    assert dict(node.params) == {"fail_on": [4.0]} or list(node.params["fail_on"]) == [4.0]
    assert [(o.name, o.source) for o in pipeline.outputs] == [("seen", "count.count")]


def test_the_run_goes_ahead_of_sending_in_its_own_thread_and_closes_there() -> None:
    """Events are produced in a run thread, a bounded number ahead of the sender; leaving
    early closes the run (its `finally` runs) before the block has exited."""
    import threading
    import time

    from videodag_service.servicer import EVENTS_AHEAD, RUN_THREAD_NAME, _running_ahead
    from videodag_service.video import FrameProcessed

    produced: list[tuple[int, str]] = []
    closed_in: list[str] = []
    enough = threading.Event()

    def events() -> Iterable[FrameProcessed]:
        try:
            for index in range(100):
                produced.append((index, threading.current_thread().name))
                if len(produced) == 2 + EVENTS_AHEAD:
                    enough.set()
                yield FrameProcessed(index, index / 25, {"index": index})
        finally:
            closed_in.append(threading.current_thread().name)

    with _running_ahead(events()) as ahead:  # type: ignore[arg-type]
        first = next(ahead)
        assert first.frame_index == 0
        assert enough.wait(timeout=10)
        time.sleep(0.2)
        # The sender holds frame 0; the run got ahead, but only by what the hand-off holds
        # plus the event it waits to put.
        assert len(produced) == 2 + EVENTS_AHEAD
        assert {name for _, name in produced} == {RUN_THREAD_NAME}
    assert closed_in == [RUN_THREAD_NAME]
    assert RUN_THREAD_NAME not in {thread.name for thread in threading.enumerate()}


def test_an_upload_cut_short_by_a_cancel_reported_late_is_cancelled_not_data_loss(
    test_server: tuple[grpc_testing.Server, Path], sample_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client killed mid-upload: gRPC may end the request stream a moment before it reports
    the call cancelled. The missing bytes are the cancel's doing, not a corrupt upload."""
    server, tmp_path = test_server
    data = sample_clip.read_bytes()
    rpc = server.invoke_stream_stream(SERVICE.methods_by_name["UploadAndRun"], (), None)
    rpc.send_request(Request(config=run_pb2.RunConfig(pipeline_id="counting", declared_size_bytes=len(data))))
    rpc.send_request(Request(chunk=data[: len(data) // 3]))
    with caplog.at_level(logging.INFO, logger="videodag_service.call_status"):
        rpc.requests_closed()
        threading.Timer(0.1, rpc.cancel).start()
        # grpcio-testing refuses a status after a cancel (real gRPC drops it): the log says which it was.
        with pytest.raises(ValueError, match="Cancelled but wanting status"):
            rpc.termination()

        def refusals() -> list[str]:
            return [record.getMessage() for record in caplog.records
                    if record.getMessage().startswith(("request refused", "call ended"))]

        assert wait_until(lambda: bool(refusals()), timeout=10)
    # grpcio-testing's time_remaining() is 0 once a call is cancelled, so the cancel reads as a
    # passed deadline here (real gRPC gives the time to the deadline): either, but not DATA_LOSS.
    assert refusals() in (["call ended: CANCELLED: the client cancelled the call; the run was stopped"],
                          ["call ended: DEADLINE_EXCEEDED: the call's deadline passed; the run was stopped"])
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.fixture
def settling_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits for a cancel that gRPC may report after the stream's end, as the servicer asks for them."""
    waits: list[float] = []
    check_soon = CallWatch.check_soon

    def recorded(watch: CallWatch, seconds: float) -> None:
        waits.append(seconds)
        check_soon(watch, seconds)

    monkeypatch.setattr(CallWatch, "check_soon", recorded)
    return waits


def test_an_upload_that_ends_short_of_its_declared_size_is_data_loss(
    test_server: tuple[grpc_testing.Server, Path], sample_clip: Path, settling_waits: list[float]
) -> None:
    server, tmp_path = test_server
    data = sample_clip.read_bytes()
    requests = [Request(config=run_pb2.RunConfig(pipeline_id="counting", declared_size_bytes=len(data))),
                Request(chunk=data[: len(data) // 3])]
    responses, code, details, _ = upload(server, requests)
    assert (responses, code) == ([], grpc.StatusCode.DATA_LOSS)
    assert f"{len(data)} bytes declared" in details
    assert len(settling_waits) == 1, "a client that died mid-upload may be reported cancelled a moment later"
    assert list((tmp_path / "uploads").iterdir()) == []


def test_a_checksum_mismatch_over_every_declared_byte_is_data_loss_without_waiting_for_a_cancel(
    test_server: tuple[grpc_testing.Server, Path], sample_clip: Path, settling_waits: list[float]
) -> None:
    """Every DATA_LOSS waited half a second for a cancel: a client whose whole file arrived has
    not died, and its checksum's refusal came 0.5 s after the same call's success would have."""
    server, tmp_path = test_server
    data = sample_clip.read_bytes()
    config = run_pb2.RunConfig(pipeline_id="counting", declared_size_bytes=len(data), sha256="0" * 64)
    responses, code, details, _ = upload(server, [Request(config=config), Request(chunk=data)])
    assert (responses, code) == ([], grpc.StatusCode.DATA_LOSS)
    assert "checksum mismatch" in details
    assert settling_waits == []
    assert list((tmp_path / "uploads").iterdir()) == []


def test_pipelines_whose_listing_no_client_could_receive_stop_the_start(tmp_path: Path) -> None:
    """A few lines of YAML aliases give five nodes a parameter of 90,000 values each: every
    ListPipelines, for every pipeline, would fail at the client."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    tens = "&t [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
    hundreds = f"&h [{tens}{', *t' * 9}]"
    thousands = f"&th [{hundreds}{', *h' * 9}]"
    ten_thousands = f"&tt [{thousands}{', *th' * 9}]"
    many = f"&many [{ten_thousands}{', *tt' * 8}]"  # 90,000 numbers, and the lists holding them
    nodes = "".join(f"""
          - id: count{n}
            plugin: test.counter
            params: {{fail_on: {many if n == 0 else '*many'}}}
            inputs: {{index: frame.index}}""" for n in range(5))
    (pipelines / "swollen.yaml").write_text(textwrap.dedent("""
        id: swollen
        version: "1"
        nodes:""") + nodes + textwrap.dedent("""
        outputs:
          seen: count0.count
    """))
    (pipelines / "small.yaml").write_text(textwrap.dedent("""
        id: small
        version: "1"
        nodes:
          - id: count
            plugin: test.counter
            inputs: {index: frame.index}
        outputs:
          seen: count.count
    """))
    dag = DagPipelineService(load_pipeline_folder(pipelines, PluginRegistry([make_test_plugin(Recorder())])))
    too_large = (rf"more than the 4,194,304 a ListPipelines answer may .* the largest is "
                 rf"{pipelines / 'swollen.yaml'} .* shorten its parameters")
    with job_service(dag, tmp_path / "data") as jobs, pytest.raises(PipelinesTooLarge, match=too_large):
        VideoPipelineServicer(dag, Settings(temp_dir=tmp_path / "uploads"), RunSlots(2), jobs)
