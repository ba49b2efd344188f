"""Job values and their conversions: ids, page tokens, stored text, protobuf, progress estimates."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.media import write_indexed_video
from videodag.v1 import job_pb2, run_pb2, video_pipeline_service_pb2
from videodag_service import convert, convert_jobs
from videodag_service.dag import DagPipelineService
from videodag_service.errors import (
    DecoderKilled,
    ErrorDetails,
    FieldViolation,
    InvalidOptions,
    JobNotFound,
    NodeFailed,
    PipelineNotFound,
    UploadTooLarge,
    VideodagError,
)
from videodag_service.jobs import (
    Job,
    JobConfig,
    JobError,
    JobPage,
    JobState,
    JobSummary,
    NodeTimingRecord,
    SqliteJobStore,
    StoredVideo,
    records,
)
from videodag_service.jobs.ids import (
    checked_idempotency_key,
    checked_job_id,
    job_id_from_page_token,
    new_job_id,
    page_token_after,
)
from videodag_service.jobs.progress import expected_frame_count
from videodag_service.server import job_config
from videodag_service.settings import Settings
from videodag_service.video import SamplingOptions, VideoFilePipelineService, VideoInfo, probe_video


def test_job_ids_sort_in_creation_order_and_are_checked() -> None:
    earlier, later = new_job_id(1000.0), new_job_id(1000.002)
    assert earlier < later and len(earlier) == 24
    assert checked_job_id(earlier) == earlier
    for forged in ("", "../etc", earlier.upper(), earlier + "0", "x:frames"):
        with pytest.raises(JobNotFound):
            checked_job_id(forged)


def test_job_ids_made_in_the_same_millisecond_sort_in_the_order_they_were_made() -> None:
    """Jobs submitted together: random bits alone listed them in any order."""
    made = [new_job_id(2000.0) for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000
    assert all(job_id.startswith(f"{2_000_000:012x}") for job_id in made)
    assert made[-1] < new_job_id(2000.001)


def test_page_tokens_round_trip_and_forged_ones_are_invalid() -> None:
    job_id = new_job_id()
    assert job_id_from_page_token(page_token_after(job_id)) == job_id
    assert job_id_from_page_token("") is None
    for forged in ("abc", "YWZ0ZXI6eHg", page_token_after(job_id)[:-3]):
        with pytest.raises(InvalidOptions):
            job_id_from_page_token(forged)


def test_idempotency_keys_are_plain_names() -> None:
    assert checked_idempotency_key("order-17:v2.retry_1") == "order-17:v2.retry_1"
    assert checked_idempotency_key("") is None
    for bad, fault in (("has space", "got ' ' as character 4"), ("x" * 129, "got 129 characters"),
                       ("slash/key", "got '/' as character 6"), ("ключ", "got 'к' (U+043A) as character 1")):
        with pytest.raises(InvalidOptions) as refused:
            checked_idempotency_key(bad)
        [violation] = refused.value.details.field_violations
        assert violation.description == f"must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, {fault}"


@pytest.mark.parametrize(
    "error",
    [
        NodeFailed("people", "detect", "ssdlite.detect_people", 7, "boom"),
        PipelineNotFound("nope", ["a", "b"]),
        UploadTooLarge("too big"),
        DecoderKilled("the decoder was killed; retry shortly", ErrorDetails(retry_after_seconds=5.0)),
        ValueError("not a domain error"),
    ],
)
def test_a_recorded_error_reports_the_status_of_the_original(error: Exception) -> None:
    """Its retry hint (RetryInfo) included: a failed job's caller submits it again then."""
    recorded = records.error_from_text(records.error_to_text(JobError.from_exception(error)))
    assert recorded is not None

    status = convert.status_from_error(recorded.to_exception())

    if isinstance(error, VideodagError):
        assert status == convert.status_from_error(error)
    else:
        assert (status.code, status.message) == (13, "internal error: ValueError: not a domain error")
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info) and info.reason == "INTERNAL"


def test_an_error_recorded_before_retry_hints_were_kept_reads_without_one() -> None:
    recorded = records.error_from_text(
        '{"status_code": "UNAVAILABLE", "reason": "DECODER_KILLED", "message": "killed", "metadata": {}, '
        '"field_violations": [], "resource": null}')
    assert recorded == JobError("UNAVAILABLE", "DECODER_KILLED", "killed")
    assert recorded.to_exception().details.retry_after_seconds is None


def test_a_job_converts_to_protobuf_with_every_part() -> None:
    summary = JobSummary("p", "2.0", 3, 1, 1.5, 0.25, (NodeTimingRecord("n", "x.y", 3, 0.1, 1),), frames_in_video=11,
                         frames_unreadable=2)
    job = Job(
        id=new_job_id(100.0),
        state=JobState.SUCCEEDED,
        pipeline_id="p",
        sampling=SamplingOptions(frame_stride=5, max_frames=3, start_seconds=1.0),
        video=StoredVideo("ref.mp4", 77, "cd" * 32),
        created_at=100.0,
        file_name="clip.mp4",
        idempotency_key="k",
        attempt=2,
        started_at=101.0,
        finished_at=102.5,
        expire_at=200.0,
        frames_done=3,
        frames_total=3,
        summary=summary,
    )

    message = convert_jobs.job_to_proto(job)

    assert message.state == job_pb2.JOB_STATE_SUCCEEDED and message.attempt == 2
    assert (message.config.pipeline_id, message.config.file_name, message.config.declared_size_bytes) == (
        "p", "clip.mp4", 77
    )
    options = message.config.options
    assert (options.frame_stride, options.max_frames, options.start_offset.seconds) == (5, 3, 1)
    assert not options.HasField("end_offset")
    assert (message.create_time.seconds, message.end_time.ToNanoseconds()) == (100, 102_500_000_000)
    assert message.summary.node_timings[0].errors == 1 and message.summary.frames_with_errors == 1
    assert message.summary.frames_in_video == 11 and message.summary.frames_unreadable == 2
    assert not message.HasField("error") and not message.HasField("video_info")
    # The options a job reports are the options it was submitted with.
    assert convert.checked_run_config(message.config) == job.sampling


def test_state_filters_refuse_unspecified() -> None:
    assert convert_jobs.job_state_filter([job_pb2.JOB_STATE_FAILED]) == ([JobState.FAILED], [])
    assert convert_jobs.job_state_filter([job_pb2.JOB_STATE_UNSPECIFIED]) == (
        [], [FieldViolation("states[0]", "0 is not a job state to filter by")]
    )


def test_a_submit_config_without_a_run_config_is_invalid() -> None:
    with pytest.raises(InvalidOptions):
        convert_jobs.job_request_from_proto(video_pipeline_service_pb2.SubmitJobConfig(idempotency_key="k"))


def test_a_bad_idempotency_key_is_named_with_the_run_configs_bad_fields() -> None:
    config = video_pipeline_service_pb2.SubmitJobConfig(
        run_config=run_pb2.RunConfig(pipeline_id="p", options=run_pb2.RunOptions(frame_stride=-1, max_frames=-2)),
        idempotency_key="a b",
    )
    with pytest.raises(InvalidOptions) as refused:
        convert_jobs.job_request_from_proto(config)

    located = convert.located_in_request(refused.value, convert.JOB_RUN_CONFIG_PATH)
    assert isinstance(located, InvalidOptions)
    assert [v.field for v in located.details.field_violations] == [
        "config.run_config.options.frame_stride", "config.run_config.options.max_frames", "config.idempotency_key"
    ]


def test_a_malformed_pipeline_id_is_named_with_a_bad_idempotency_key() -> None:
    config = video_pipeline_service_pb2.SubmitJobConfig(run_config=run_pb2.RunConfig(pipeline_id="Bad/Id"),
                                                        idempotency_key="a b")
    with pytest.raises(InvalidOptions) as refused:
        convert_jobs.job_request_from_proto(config)

    located = convert.located_in_request(refused.value, convert.JOB_RUN_CONFIG_PATH)
    assert [v.field for v in located.details.field_violations] == [  # type: ignore[attr-defined]
        "config.run_config.pipeline_id", "config.idempotency_key"
    ]
    assert "'Bad/Id' is not a name" in located.details.field_violations[0].description  # type: ignore[attr-defined]


def test_a_bad_idempotency_key_alone_or_without_a_run_config_is_named() -> None:
    alone = video_pipeline_service_pb2.SubmitJobConfig(run_config=run_pb2.RunConfig(pipeline_id="p"),
                                                       idempotency_key="a b")
    bare = video_pipeline_service_pb2.SubmitJobConfig(idempotency_key="a/b")
    expected = {"config.idempotency_key"}, {"config.run_config", "config.idempotency_key"}
    for config, fields in zip((alone, bare), expected, strict=True):
        with pytest.raises(InvalidOptions) as refused:
            convert_jobs.job_request_from_proto(config)
        assert {v.field for v in refused.value.details.field_violations} == fields


# Each example decodes a real video: its time follows the machine's load, not the code.
@settings(deadline=None, max_examples=40)
@given(
    stride=st.integers(1, 7),
    max_frames=st.one_of(st.none(), st.integers(1, 40)),
    start=st.one_of(st.none(), st.sampled_from([0.0, 0.2, 0.55])),
    end=st.one_of(st.none(), st.sampled_from([0.9, 1.6])),
)
def test_expected_frames_match_what_a_run_processes(
    indexed_clip: Path, video_service: VideoFilePipelineService,
    stride: int, max_frames: int | None, start: float | None, end: float | None,
) -> None:
    sampling = SamplingOptions(frame_stride=stride, max_frames=max_frames, start_seconds=start, end_seconds=end)
    processed = len(video_service.run_on_file("frame_stats_v1", indexed_clip, sampling))
    assert expected_frame_count(probe_video(indexed_clip), sampling) == processed


@pytest.fixture(scope="module")
def indexed_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("media") / "clip.avi", 37, fps=20.0)


@pytest.fixture(scope="module")
def video_service() -> VideoFilePipelineService:
    return VideoFilePipelineService(DagPipelineService.from_folder())


def test_no_frame_count_means_unknown_progress() -> None:
    info = probe_like(frame_count=0)
    assert expected_frame_count(info, SamplingOptions()) == 0
    assert expected_frame_count(probe_like(frame_count=10, fps=0.0), SamplingOptions(start_seconds=1.0)) == 0
    assert expected_frame_count(probe_like(frame_count=10), SamplingOptions(frame_stride=3)) == math.ceil(10 / 3)


def probe_like(frame_count: int, fps: float = 10.0) -> VideoInfo:
    return VideoInfo(fps, frame_count, 64, 48, frame_count / fps if fps else 0.0, "MJPG", 1)


def test_a_summary_kept_before_the_frame_count_was_reads_back_as_not_counted() -> None:
    summary = JobSummary("p", "2.0", 3, 0, 1.5, 0.25, frames_in_video=12, frames_unreadable=1)
    text = records.summary_to_text(summary)
    assert records.summary_from_text(text) == summary
    # As an earlier release, without these fields, stores them.
    older = text.replace(',"frames_in_video":12', "").replace(',"frames_unreadable":1', "")
    assert older.count(",") == text.count(",") - 2
    assert records.summary_from_text(older) == dataclasses.replace(summary, frames_in_video=None, frames_unreadable=0)


def test_the_longest_window_a_client_may_send_comes_back_within_a_durations_range() -> None:
    """Stored as float seconds, Duration's own maximum (10,000 years less a nanosecond) rounds
    to a second past it: grpcurl could not print a job with it, nor any page listing it."""
    sent = run_pb2.RunOptions()
    sent.end_offset.seconds, sent.end_offset.nanos = 315_576_000_000, 999_999_999
    sampling = convert.checked_run_config(run_pb2.RunConfig(pipeline_id="p", options=sent))
    echoed = convert_jobs.sampling_to_proto(sampling).end_offset
    assert (echoed.seconds, echoed.nanos) == (315_576_000_000, 999_999_999)
    assert json_format.MessageToJson(echoed) == '"315576000000.999999999s"'


def test_a_page_of_long_named_jobs_is_cut_to_what_a_client_receives_and_continues_after_its_last(
    tmp_path: Path,
) -> None:
    """1,000 jobs of 1,024-character names in a 4-byte script are 4+ MiB: the page stops short
    and its token continues, so paging still lists every job once."""
    name = "\N{GRINNING FACE}" * 1024
    store = SqliteJobStore(tmp_path)
    try:
        created = [store.create(Job(new_job_id(1000.0 + n), JobState.QUEUED, "p", SamplingOptions(),
                                    StoredVideo(f"{n}.mp4", 1, "0" * 64), 1000.0 + n, file_name=name)).id
                   for n in range(1100)]
        limit = 4 * 1024 * 1024
        listed: list[str] = []
        pages: list[int] = []
        token = ""
        while True:
            page = store.list_jobs(1000, job_id_from_page_token(token), ())
            response = convert_jobs.job_page_to_proto(page, limit)
            assert response.ByteSize() <= limit
            pages.append(len(response.jobs))
            listed += [job.id for job in response.jobs]
            token = response.next_page_token
            if not token:
                break
    finally:
        store.close()
    assert listed == created[::-1]
    assert len(pages) == 2 and pages[0] < 1000, pages  # cut short, then the rest


def test_a_page_that_fits_keeps_the_stores_token() -> None:
    jobs = tuple(Job(new_job_id(1.0 + n), JobState.QUEUED, "p", SamplingOptions(), StoredVideo("v.mp4", 1, "0" * 64),
                     1.0 + n) for n in range(3))
    response = convert_jobs.job_page_to_proto(JobPage(jobs, "the store's token"), 4 * 1024 * 1024)
    assert [job.id for job in response.jobs] == [job.id for job in jobs]
    assert response.next_page_token == "the store's token"


def test_the_servers_settings_default_each_job_setting_as_the_job_backend_does() -> None:
    """A server's flags set these; the backend, built without them (a script, a test), must not
    quietly run with other values."""
    from_settings = job_config(Settings())
    from_defaults = JobConfig(data_dir=from_settings.data_dir, max_upload_bytes=from_settings.max_upload_bytes)
    for name in ("redis_url", "workers", "retention_seconds", "job_timeout_seconds", "lease_seconds", "min_free_bytes"):
        assert getattr(from_settings, name) == getattr(from_defaults, name), name


def test_a_state_filter_of_many_bad_values_names_the_first_ten_and_counts_the_rest() -> None:
    """Each of 300,000 bad values was a violation: the status's details passed the trailer's limit
    (the client got RESOURCE_EXHAUSTED "received metadata size exceeds hard limit"), the log a 15 MB line."""
    states, violations = convert_jobs.job_state_filter([job_pb2.JOB_STATE_FAILED, *[0] * 300_000])
    assert states == [JobState.FAILED]
    assert [v.field for v in violations] == [f"states[{i}]" for i in range(1, 11)] + ["states"]
    assert violations[-1].description == "299990 more values are not job states"
