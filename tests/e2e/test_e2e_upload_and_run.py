"""UploadAndRun end to end: a real server on loopback driven by the Python client and raw stubs."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from harness import ServerFactory, ServerHarness

from fakes.media import write_avi_with_a_damaged_frame, write_tone
from fakes.waiting import wait_until
from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import (
    DeadlineExceeded,
    FrameResult,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RunOptions,
    RunSummary,
    Unavailable,
    UploadReceived,
    VideoOpened,
)

Request = video_pipeline_service_pb2.UploadAndRunRequest


def raw_call(harness: ServerHarness, requests: Iterator[Request], timeout: float = 30) -> list[object]:
    """Drive UploadAndRun with hand-made messages; returns the responses or raises grpc.RpcError."""
    with grpc.insecure_channel(harness.target) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        return list(stub.UploadAndRun(requests, timeout=timeout))


def config(pipeline_id: str = "frame_stats_v1", **fields: object) -> Request:
    return Request(config=run_pb2.RunConfig(pipeline_id=pipeline_id, **fields))


def chunks_of(path: Path, size: int = 64 * 1024) -> Iterator[Request]:
    with path.open("rb") as file:
        while block := file.read(size):
            yield Request(chunk=block)


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details()


def test_results_stream_in_frame_order_with_summary(server: ServerHarness, sample_clip: Path) -> None:
    events = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(frame_stride=10)))
    assert isinstance(events[0], UploadReceived)
    assert events[0].size_bytes == sample_clip.stat().st_size
    assert events[0].sha256 == hashlib.sha256(sample_clip.read_bytes()).hexdigest()
    assert isinstance(events[1], VideoOpened)
    assert (events[1].width, events[1].height, events[1].frame_count) == (768, 576, 120)
    frames = [e for e in events if isinstance(e, FrameResult)]
    assert [f.frame_index for f in frames] == list(range(0, 120, 10))
    assert all(f.result["stats"]["width"] == 768 for f in frames)
    assert frames[1].timestamp_seconds == pytest.approx(10 / events[1].fps, abs=1e-3)
    summary = events[-1]
    assert isinstance(summary, RunSummary)
    assert summary.frames_processed == 12
    assert summary.pipeline_id == "frame_stats_v1"
    assert [t.node_id for t in summary.node_timings] == ["stats"]
    assert summary.node_timings[0].calls == 12
    assert not summary.ended_early
    assert summary.frames_in_video == 120  # read to the end with a stride: every frame counted
    assert server.leftover_uploads() == []


def test_a_video_cut_short_reports_its_frames_and_that_it_ended_early(
    server: ServerHarness, sample_clip: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(sample_clip.read_bytes()[:400_000])
    events = list(server.client.upload_and_run(cut, "frame_stats_v1"))
    frames = [event for event in events if isinstance(event, FrameResult)]
    summary = events[-1]
    assert isinstance(summary, RunSummary) and summary.ended_early
    assert summary.frames_processed == len(frames) and 10 < len(frames) < 110
    assert summary.frames_in_video == len(frames)
    assert [frame.frame_index for frame in frames] == list(range(len(frames)))
    assert server.leftover_uploads() == []


def test_a_damaged_frame_is_decoded_past_and_counted_in_the_summary_of_a_run_and_a_job(
    server: ServerHarness, tmp_path: Path
) -> None:
    damaged = write_avi_with_a_damaged_frame(tmp_path / "damaged.avi", 30, damaged_index=12)
    events = list(server.client.upload_and_run(damaged, "frame_stats_v1"))
    assert [event.frame_index for event in events if isinstance(event, FrameResult)] == [
        index for index in range(30) if index != 12
    ]
    summary = events[-1]
    assert isinstance(summary, RunSummary)
    assert (summary.frames_unreadable, summary.frames_in_video, summary.ended_early) == (1, 30, False)

    job = server.client.submit_job(damaged, "frame_stats_v1")
    assert wait_until(lambda: server.client.get_job(job.id).state.is_finished, timeout=30)
    finished = server.client.get_job(job.id)
    assert server.job_videos_left_after() == []
    assert finished.summary is not None and finished.summary.frames_unreadable == 1
    assert server.leftover_uploads() == []


def test_stride_and_max_frames(server: ServerHarness, sample_clip: Path) -> None:
    events = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(frame_stride=5, max_frames=3)))
    assert [e.frame_index for e in events if isinstance(e, FrameResult)] == [0, 5, 10]
    summary = events[-1]
    assert isinstance(summary, RunSummary) and summary.frames_in_video == 0  # stopped before the end: not counted


def test_first_result_arrives_before_the_run_ends(server: ServerHarness, make_video) -> None:
    video = make_video(40)
    arrivals: list[tuple[str, float]] = []
    for event in server.client.upload_and_run(video, "slow"):
        arrivals.append((type(event).__name__, time.monotonic()))
    first_frame = next(t for name, t in arrivals if name == "FrameResult")
    summary = arrivals[-1][1]
    # 40 frames at 50 ms each: the first result must not wait for the other 39.
    assert summary - first_frame > 1.0


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([], "the stream was empty; send a config message first"),
        ([Request(chunk=b"abc")], "the first message must be the config; a chunk arrived first"),
        ([Request(), Request(chunk=b"abc")], "the first message must be the config; an empty message arrived"),
        ([config(), Request(chunk=b"abc"), config()], "the config was sent twice"),
        ([config()], "the upload is empty: no video bytes arrived"),
        ([config(file_name="clips/empty.mp4")], "the upload of 'empty.mp4' is empty: no video bytes arrived"),
    ],
)
def test_bad_request_streams_are_invalid_argument(server: ServerHarness, requests: list[Request],
                                                  expected: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(server, iter(requests))
    code, message = status_of(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected.lower() in message.lower()
    assert server.leftover_uploads() == []


def test_chunk_messages_of_every_valid_shape_are_stored_as_protobuf_reads_them(
    server: ServerHarness, sample_clip: Path
) -> None:
    """Plain chunk messages go to the servicer as views of the received bytes; the rest through protobuf."""
    video = sample_clip.read_bytes()
    third = len(video) // 3
    messages = [
        config().SerializeToString(),
        Request(chunk=video[:third]).SerializeToString(),
        Request(chunk=b"").SerializeToString(),
        b"",  # a message with no field set: an empty chunk
        Request(chunk=video[third:2 * third]).SerializeToString() + b"\x98\x06\x01",  # and an unknown field
        # The chunk field twice: protobuf keeps the last.
        Request(chunk=b"dropped").SerializeToString() + Request(chunk=video[2 * third:]).SerializeToString(),
    ]
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream(
            "/videodag.v1.VideoPipelineService/UploadAndRun",
            request_serializer=None,
            response_deserializer=video_pipeline_service_pb2.UploadAndRunResponse.FromString,
        )
        responses = list(call(iter(messages), timeout=30))
    received = responses[0].upload_received
    assert (received.size_bytes, received.sha256) == (len(video), hashlib.sha256(video).hexdigest())
    assert responses[-1].summary.frames_processed == 120
    assert server.leftover_uploads() == []


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_a_client_that_compresses_its_messages_is_served_the_same(
    server: ServerHarness, sample_clip: Path, compression: grpc.Compression
) -> None:
    """Clients in other languages may compress what they send; gRPC inflates it before the chunk is read."""
    video = sample_clip.read_bytes()
    with grpc.insecure_channel(server.target, compression=compression) as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        responses = list(stub.UploadAndRun(iter([config(), *chunks_of(sample_clip, 100_000)]), timeout=30))
    received = responses[0].upload_received
    assert (received.size_bytes, received.sha256) == (len(video), hashlib.sha256(video).hexdigest())
    assert responses[-1].summary.frames_processed == 120
    assert server.leftover_uploads() == []


@pytest.mark.parametrize("pipeline_id", ["", "no_such_pipeline"])
def test_missing_or_unknown_pipeline_is_not_found_listing_known_ids(
    server: ServerHarness, sample_clip: Path, pipeline_id: str
) -> None:
    with pytest.raises(NotFound) as caught:
        list(server.client.upload_and_run(sample_clip, pipeline_id))
    problem = f"unknown pipeline {pipeline_id!r}" if pipeline_id else "no pipeline_id given (it is required)"
    assert caught.value.message.startswith(f"{problem}; known pipelines: ")
    assert "frame_stats_v1" in caught.value.message
    assert "player_tracking_v1" in caught.value.metadata["known_pipeline_ids"]
    assert caught.value.reason == "PIPELINE_NOT_FOUND"
    assert caught.value.resource is not None
    assert server.leftover_uploads() == []


def _violated_fields(call: Callable[[], object]) -> list[str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(request) for detail in status.details)
    return [violation.field for violation in request.field_violations]


def test_every_bad_field_is_named_by_its_path_in_the_request_of_each_upload_call(
    server: ServerHarness, sample_clip: Path
) -> None:
    """A client in any language looks the BadRequest's field up in the message it sent."""
    channel = grpc.insecure_channel(server.target)
    stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
    data = sample_clip.read_bytes()[:4096]
    bad_configs = [
        (run_pb2.RunConfig(pipeline_id="frame_stats_v1", declared_size_bytes=-1), "declared_size_bytes"),
        (run_pb2.RunConfig(pipeline_id="frame_stats_v1", sha256="abc"), "sha256"),
        # Every job returns its name in each lookup and listing: 5 MB of it would break them all.
        (run_pb2.RunConfig(pipeline_id="frame_stats_v1", file_name="v" * 1025 + ".mp4"), "file_name"),
        (run_pb2.RunConfig(pipeline_id="frame_stats_v1", options=run_pb2.RunOptions(frame_stride=-1)),
         "options.frame_stride"),
        (run_pb2.RunConfig(pipeline_id="frame_stats_v1", decode_during_upload=True), "declared_size_bytes"),
        (run_pb2.RunConfig(pipeline_id="Frame/Stats"), "pipeline_id"),  # INVALID_PIPELINE_ID, located the same
    ]
    for run_config, field in bad_configs:
        run_requests = [video_pipeline_service_pb2.UploadAndRunRequest(config=run_config),
                        video_pipeline_service_pb2.UploadAndRunRequest(chunk=data)]
        assert _violated_fields(lambda sent=run_requests: list(stub.UploadAndRun(iter(sent), timeout=30))) == [
            f"config.{field}"]
        if run_config.decode_during_upload:
            # A job's upload is stored first: the option has no say there, and is no error.
            job_config = video_pipeline_service_pb2.SubmitJobConfig(run_config=run_config)
            job = stub.SubmitJob(iter([video_pipeline_service_pb2.SubmitJobRequest(config=job_config),
                                       video_pipeline_service_pb2.SubmitJobRequest(chunk=data)]), timeout=30).job
            assert job.id and job.config.pipeline_id == "frame_stats_v1"
            continue
        job_config = video_pipeline_service_pb2.SubmitJobConfig(run_config=run_config)
        job_requests = [video_pipeline_service_pb2.SubmitJobRequest(config=job_config),
                        video_pipeline_service_pb2.SubmitJobRequest(chunk=data)]
        assert _violated_fields(lambda sent=job_requests: stub.SubmitJob(iter(sent), timeout=30)) == [
            f"config.run_config.{field}"]
    channel.close()
    assert server.leftover_uploads() == []


def test_every_bad_field_of_a_config_is_named_at_once(server: ServerHarness, sample_clip: Path) -> None:
    """A client fixing its config gets the whole list in one round trip, not one field a try."""
    channel = grpc.insecure_channel(server.target)
    stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
    data = sample_clip.read_bytes()[:4096]
    run_config = run_pb2.RunConfig(
        pipeline_id="Frame/Stats", declared_size_bytes=-3, sha256="xyz",
        options=run_pb2.RunOptions(frame_stride=-1, start_offset=duration_pb2.Duration(seconds=1, nanos=-5)),
    )
    run_requests = [video_pipeline_service_pb2.UploadAndRunRequest(config=run_config),
                    video_pipeline_service_pb2.UploadAndRunRequest(chunk=data)]
    expected = ["pipeline_id", "options.start_offset", "options.frame_stride", "declared_size_bytes", "sha256"]
    assert _violated_fields(lambda: list(stub.UploadAndRun(iter(run_requests), timeout=30))) == [
        f"config.{field}" for field in expected]
    job_requests = [video_pipeline_service_pb2.SubmitJobRequest(
                        config=video_pipeline_service_pb2.SubmitJobConfig(run_config=run_config)),
                    video_pipeline_service_pb2.SubmitJobRequest(chunk=data)]
    assert _violated_fields(lambda: stub.SubmitJob(iter(job_requests), timeout=30)) == [
        f"config.run_config.{field}" for field in expected]
    channel.close()
    assert server.leftover_uploads() == []


@pytest.mark.parametrize(
    "offset",
    [duration_pb2.Duration(seconds=1, nanos=-5), duration_pb2.Duration(seconds=-1, nanos=5),
     duration_pb2.Duration(nanos=1_000_000_000), duration_pb2.Duration(seconds=2**62)],
    ids=["mixed signs", "mixed signs, negative", "nanos out of range", "seconds out of range"],
)
def test_an_offset_that_is_not_a_valid_duration_is_refused(
    server: ServerHarness, sample_clip: Path, offset: duration_pb2.Duration
) -> None:
    channel = grpc.insecure_channel(server.target)
    stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
    run_config = run_pb2.RunConfig(pipeline_id="frame_stats_v1", options=run_pb2.RunOptions(end_offset=offset))
    requests = [video_pipeline_service_pb2.UploadAndRunRequest(config=run_config),
                video_pipeline_service_pb2.UploadAndRunRequest(chunk=sample_clip.read_bytes()[:4096])]
    assert _violated_fields(lambda: list(stub.UploadAndRun(iter(requests), timeout=30))) == [
        "config.options.end_offset"]
    channel.close()


def test_pipeline_id_that_looks_like_a_path_is_refused(server: ServerHarness, sample_clip: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a name"):
        list(server.client.upload_and_run(sample_clip, "../../etc/passwd"))


def test_bad_options_name_the_fields(server: ServerHarness, sample_clip: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(frame_stride=-2, max_frames=-1)))
    fields = {violation.field for violation in caught.value.field_violations}
    assert fields == {"config.options.frame_stride", "config.options.max_frames"}
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1",
                                          RunOptions(start_seconds=5.0, end_seconds=2.0)))
    assert [v.field for v in caught.value.field_violations] == ["config.options.end_offset"]
    assert server.leftover_uploads() == []


def test_declared_upload_over_the_limit_is_refused_before_sending(make_server: ServerFactory,
                                                                  sample_clip: Path) -> None:
    server = make_server(max_upload_bytes=100_000)
    with pytest.raises(ResourceExhausted) as caught:
        list(server.client.upload_and_run(sample_clip, "frame_stats_v1"))
    assert caught.value.reason == "UPLOAD_TOO_LARGE"
    assert "100000" in caught.value.message
    assert server.leftover_uploads() == []


def test_undeclared_upload_is_refused_as_soon_as_it_crosses_the_limit(make_server: ServerFactory) -> None:
    server = make_server(max_upload_bytes=100_000)
    refused = threading.Event()
    waited_for_refusal: list[bool] = []

    def requests() -> Iterator[Request]:
        yield config()
        for _ in range(10):  # 160 kB: over the limit, but the stream stays open
            yield Request(chunk=b"x" * 16_384)
        # A server that only checked at the end of the stream would never answer here.
        waited_for_refusal.append(refused.wait(timeout=15))
        yield Request(chunk=b"x" * 16_384)

    with pytest.raises(grpc.RpcError) as caught:
        raw_call(server, requests())
    refused.set()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 100000 bytes" in caught.value.details()
    assert waited_for_refusal in ([], [True])
    assert server.leftover_uploads() == []


def test_unreadable_video_is_invalid_argument(server: ServerHarness, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(garbage, "frame_stats_v1"))
    # Named as the client sent it, not by the server's private temp file.
    assert caught.value.message.startswith("Unable to read video file 'garbage.mp4': ")
    assert caught.value.reason == "VIDEO_UNREADABLE"
    assert server.leftover_uploads() == []


def test_an_audio_file_is_refused_as_audio(server: ServerHarness, tmp_path: Path) -> None:
    song = write_tone(tmp_path / "song.mp3", seconds=2.0)
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(song, "frame_stats_v1"))
    assert caught.value.message == (
        "Unable to read video file 'song.mp3': not a video OpenCV can decode: "
        "it is MP3 audio (audio/mpeg), with no video stream"
    )
    assert (caught.value.reason, caught.value.metadata) == ("VIDEO_UNREADABLE", {"detected_type": "audio/mpeg"})
    assert server.leftover_uploads() == []


def test_a_git_lfs_pointer_is_refused_as_text(server: ServerHarness, tmp_path: Path) -> None:
    pointer = tmp_path / "clip.mp4"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 84977953\n")
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(pointer, "frame_stats_v1"))
    assert caught.value.message.endswith("it is text, starting 'version https://git-lfs.github.com/spec/'")
    assert caught.value.metadata == {"detected_type": "text/plain"}
    assert server.leftover_uploads() == []


def test_the_server_log_names_a_text_upload_without_quoting_it(
    server: ServerHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller is told how its text starts (its own bytes); the log, read by others, is not:
    it showed 'DB_PASSWORD=hunter2 patient: Jane Roe' for a file uploaded by mistake."""
    secrets = tmp_path / "notes.mp4"
    secrets.write_text("DB_PASSWORD=hunter2 patient: Jane Roe, DOB 1970-01-01\n")
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(secrets, "frame_stats_v1"))
    assert caught.value.message.endswith("it is text, starting 'DB_PASSWORD=hunter2 patient: Jane Roe, D'")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "request refused: INVALID_ARGUMENT: Unable to read video file 'notes.mp4': not a video OpenCV can decode: " \
           "it is text (its start is told to the caller)" in logged
    assert "hunter2" not in logged


def test_text_named_txt_is_refused_as_text_not_decoded_as_ansi_art(server: ServerHarness, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"  # FFmpeg alone would take .txt for its "tty" demuxer and show it as frames
    notes.write_text("Meeting notes\n" + "line of text, and more text\n" * 200)
    with pytest.raises(InvalidArgument) as caught:
        list(server.client.upload_and_run(notes, "frame_stats_v1"))
    assert caught.value.message.endswith("it is text, starting 'Meeting notes line of text, and more tex'")
    assert caught.value.metadata == {"detected_type": "text/plain"}
    assert server.leftover_uploads() == []


def test_an_upload_without_a_file_name_is_called_the_upload(server: ServerHarness, tmp_path: Path) -> None:
    garbage = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(server, iter([config(), Request(chunk=garbage)]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("Unable to read video file 'upload': ")
    assert server.leftover_uploads() == []


def test_size_and_checksum_mismatch_are_data_loss(server: ServerHarness, sample_clip: Path) -> None:
    size = sample_clip.stat().st_size
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(server, iter([config(declared_size_bytes=size + 10), *chunks_of(sample_clip)]))
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(server, iter([config(sha256="0" * 64), *chunks_of(sample_clip)]))
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "sha256" in caught.value.details().lower() or "checksum" in caught.value.details().lower()
    assert server.leftover_uploads() == []


def test_plugin_failure_is_internal_naming_node_and_frame(server: ServerHarness, make_video) -> None:
    seen: list[int] = []
    with pytest.raises(Internal) as caught:
        for event in server.client.upload_and_run(make_video(10), "failing"):
            if isinstance(event, FrameResult):
                seen.append(event.frame_index)
    assert seen == [0, 1, 2]
    assert "node 'count' (test.counter) failed on frame 3" in caught.value.message
    assert caught.value.metadata["frame_index"] == "3"
    assert server.recorder.count("close") == 1
    assert server.leftover_uploads() == []


def test_skip_policy_reports_node_errors_in_band(server: ServerHarness, make_video) -> None:
    events = list(server.client.upload_and_run(make_video(3), "skipping"))
    frames = [e for e in events if isinstance(e, FrameResult)]
    assert [f.result for f in frames] == [{"seen": 1}, {}, {"seen": 3}]
    assert [(e.node_id, e.code) for e in frames[1].node_errors] == [("count", grpc.StatusCode.INTERNAL)]
    assert "boom on 1" in frames[1].node_errors[0].message
    assert events[-1].frames_with_errors == 1


def test_client_cancel_stops_the_work_and_cleans_up(server: ServerHarness, make_video) -> None:
    stream = server.client.upload_and_run(make_video(200), "slow")
    for event in stream:
        if isinstance(event, FrameResult) and event.frame_index == 2:
            break
    stream.close()
    # Work stopped: no frame after the run was closed, and far from all 200.
    assert server.frames_when_the_run_stopped() < 50
    assert server.uploads_left_after() == []


def test_deadline_exceeded_stops_the_run(server: ServerHarness, make_video) -> None:
    with pytest.raises(DeadlineExceeded):
        list(server.client.upload_and_run(make_video(200), "slow", timeout=1.0))
    assert server.frames_when_the_run_stopped() < 200
    assert server.uploads_left_after() == []


def test_too_many_runs_is_refused_at_once_with_retry_hint(make_server: ServerFactory, make_video) -> None:
    server = make_server(max_concurrent_runs=1, max_waiting_runs=0)
    video = make_video(100)
    busy = server.client.upload_and_run(video, "slow")
    next(busy)  # the first run holds the only slot once its upload is received
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as caught:
        list(server.client.upload_and_run(video, "frame_stats_v1"))
    assert time.monotonic() - started < 5
    assert caught.value.reason == "TOO_MANY_RUNS"
    assert caught.value.retry_after == pytest.approx(1.0)
    busy.close()


def test_draining_server_refuses_new_runs_and_finishes_in_flight(make_server: ServerFactory, make_video) -> None:
    server = make_server()
    stream = server.client.upload_and_run(make_video(20), "slow")
    next(stream)
    stopper = threading.Thread(target=server.running.stop, args=(10.0,))
    stopper.start()
    assert wait_until(lambda: server.running.run_slots.draining)
    with pytest.raises(Unavailable):
        list(server.client.upload_and_run(make_video(5), "frame_stats_v1"))
    events = list(stream)
    stopper.join()
    assert isinstance(events[-1], RunSummary)
    assert events[-1].frames_processed == 20
    assert server.leftover_uploads() == []


def test_list_and_get_pipelines(server: ServerHarness) -> None:
    pipelines = {p.id: p for p in server.client.list_pipelines()}
    assert {"player_tracking_v1", "yolo_ocr", "motion_v1", "frame_stats_v1"} <= set(pipelines)
    tracking = server.client.get_pipeline("player_tracking_v1")
    assert tracking.version == "1.1.0"
    assert [(n.id, n.plugin, n.stateful) for n in tracking.nodes] == [
        ("detect", "ssdlite.detect_people", False),
        ("track", "bytetrack.track", True),
    ]
    with pytest.raises(NotFound):
        server.client.get_pipeline("nope")
