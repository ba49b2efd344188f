"""Jobs from a server that sends times outside a Timestamp's range, error details that do not parse, or
page tokens that never end a listing: the job is read with a sane value, or the listing ends with a typed
error, never an exception from protobuf or `datetime`, nor a listing that goes on forever."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from fake_servicer import FakeVideoPipelineServicer, serving
from google.protobuf import any_pb2

from videodag.v1 import job_pb2, video_pipeline_service_pb2
from videodag_client import AsyncVideodagClient, Internal, Job, JobState, RunOptions, VideodagClient
from videodag_client.cli import _exit_codes, main
from videodag_client.cli import jobs as jobs_cli

# The first and the last second a Timestamp may hold: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
_FIRST_SECOND = -62_135_596_800
_LAST_SECOND = 253_402_300_799
# The fakes' pages that lead on end after this many calls, so that a client that follows them
# all finishes (and its test fails) instead of running forever.
_CALLS_BEFORE_THE_LAST_PAGE = 300

ListAnswer = Callable[[int, str], video_pipeline_service_pb2.ListJobsResponse]
"""ListJobs' answer to its call number (from 1) and the token asked for."""


class JobsServicer(FakeVideoPipelineServicer):
    """GetJob answers `job`; ListJobs answers `list_answer`, and records the tokens asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.job = _job("job-1")
        self.list_answer: ListAnswer = lambda _call, _token: video_pipeline_service_pb2.ListJobsResponse(
            jobs=[self.job]
        )
        self.tokens_asked: list[str] = []

    def GetJob(
        self, request: video_pipeline_service_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.GetJobResponse:
        return video_pipeline_service_pb2.GetJobResponse(job=self.job)

    def ListJobs(
        self, request: video_pipeline_service_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> video_pipeline_service_pb2.ListJobsResponse:
        self.tokens_asked.append(request.page_token)
        return self.list_answer(len(self.tokens_asked), request.page_token)


@pytest.fixture
def jobs() -> JobsServicer:
    return JobsServicer()


@pytest.fixture
def jobs_target(jobs: JobsServicer) -> Iterator[str]:
    with serving(jobs) as address:
        yield address


@pytest.fixture
def jobs_client(jobs_target: str) -> Iterator[VideodagClient]:
    with VideodagClient(jobs_target, timeout=10) as client:
        yield client


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A time zone west of UTC: year 1's first hours are year 0 there, which `datetime` cannot hold."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _job(job_id: str, create_second: int = 1_700_000_000) -> job_pb2.Job:
    job = job_pb2.Job(id=job_id, state=job_pb2.JOB_STATE_QUEUED, attempt=1)
    job.config.pipeline_id = "motion_v1"
    job.create_time.seconds = create_second
    return job


def _failed_with_garbage_details(job_id: str) -> job_pb2.Job:
    job = _job(job_id)
    job.state = job_pb2.JOB_STATE_FAILED
    job.error.code = grpc.StatusCode.INTERNAL.value[0]
    job.error.message = "node failed"
    job.error.details.append(any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff"))
    return job


def _page(jobs: list[job_pb2.Job], token: str) -> video_pipeline_service_pb2.ListJobsResponse:
    return video_pipeline_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)


def _repeating(token: str) -> ListAnswer:
    """A job a page, each page giving `token` as the next (until the fake gives up)."""
    return lambda call, _token: _page(
        [_job(f"job-{call}")], token if call < _CALLS_BEFORE_THE_LAST_PAGE else ""
    )


# ---------------------------------------------------------------- a job's values


@pytest.mark.parametrize(
    ("seconds", "nanos", "read_as"),
    [
        (2**62, 0, datetime.max.replace(tzinfo=UTC)),
        (-(2**62), 0, datetime.min.replace(tzinfo=UTC)),
        (_LAST_SECOND, 999_999_999, datetime.max.replace(tzinfo=UTC)),
        (_FIRST_SECOND, 0, datetime.min.replace(tzinfo=UTC)),
        (10, -1, datetime(1970, 1, 1, 0, 0, 9, 999_999, tzinfo=UTC)),  # nanos out of their range
    ],
)
def test_a_time_outside_a_timestamps_range_reads_as_its_nearest_end(
    jobs: JobsServicer, jobs_client: VideodagClient, seconds: int, nanos: int, read_as: datetime
) -> None:
    jobs.job.create_time.seconds, jobs.job.create_time.nanos = seconds, nanos
    jobs.job.end_time.seconds = seconds

    job = jobs_client.get_job("job-1")

    assert job.created_at == read_as
    assert job.ended_at is not None and job.ended_at.year == read_as.year


def test_a_failed_jobs_error_details_that_do_not_parse_leave_its_code_and_message(
    jobs: JobsServicer, jobs_client: VideodagClient
) -> None:
    jobs.job = _failed_with_garbage_details("job-1")

    error = jobs_client.get_job("job-1").error

    assert error is not None and (error.code, error.message, error.reason) == (
        grpc.StatusCode.INTERNAL, "node failed", ""
    )


def test_the_async_client_reads_a_page_holding_such_a_job(jobs: JobsServicer, jobs_target: str) -> None:
    jobs.job = _failed_with_garbage_details("job-1")

    async def list_jobs() -> list[Job]:
        async with AsyncVideodagClient(jobs_target, timeout=10) as client:
            return list((await client.list_jobs()).jobs)

    assert [job.id for job in asyncio.run(list_jobs())] == ["job-1"]


# ---------------------------------------------------------------- `videodag jobs`


def test_one_bad_job_does_not_make_the_listing_fail(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs.list_answer = lambda _call, _token: _page(
        [_job("job-far", create_second=2**62), _failed_with_garbage_details("job-err"), _job("job-ok")], ""
    )

    assert main(["--server", jobs_target, "jobs"]) == _exit_codes.SUCCESS
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["ID", "job-far", "job-err", "job-ok"]
    assert "9999-12-31" in listed[1]


@pytest.mark.usefixtures("new_york")
def test_the_first_and_last_valid_times_are_listed_in_utc_where_the_zone_cannot_shift_them(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs.list_answer = lambda _call, _token: _page(
        [_job("job-first", _FIRST_SECOND), _job("job-last", _LAST_SECOND), _job("job-now")], ""
    )

    assert main(["--server", jobs_target, "jobs"]) == _exit_codes.SUCCESS
    listed = capsys.readouterr().out
    assert "0001-01-01 00:00:00+00:00" in listed
    assert "9999-12-31 18:59:59-05:00" in listed
    assert "2023-11-14 17:13:20-05:00" in listed  # a time the zone can shift is shown in it


@pytest.mark.usefixtures("new_york")
def test_one_jobs_lines_show_its_first_valid_time_in_utc(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs.job = _job("job-first", _FIRST_SECOND)

    assert main(["--server", jobs_target, "jobs", "show", "job-first"]) == _exit_codes.SUCCESS
    assert "  created:   0001-01-01 00:00:00+00:00" in capsys.readouterr().out.splitlines()


def test_the_last_valid_time_east_of_utc_is_shown_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        job = Job(
            id="job-last", state=JobState.QUEUED, pipeline_id="p", options=RunOptions(), file_name="", size_bytes=0,
            sha256="", idempotency_key="", created_at=datetime.max.replace(tzinfo=UTC), started_at=None,
            ended_at=None, expires_at=None, frames_done=0, frames_total=0, attempt=1, video=None, summary=None,
        )
        assert "9999-12-31 23:59:59+00:00" in jobs_cli.format_job(job)
    finally:
        monkeypatch.undo()
        time.tzset()


# ---------------------------------------------------------------- paging


def test_a_page_token_given_again_ends_the_listing_with_internal_after_the_jobs_read(
    jobs: JobsServicer, jobs_client: VideodagClient
) -> None:
    jobs.list_answer = _repeating("same")
    received: list[str] = []

    with pytest.raises(Internal, match="after page 2 asks for page 2 again") as raised:
        received.extend(job.id for job in jobs_client.iter_jobs())

    assert raised.value.reason == "PAGE_TOKEN_REPEATED"
    assert received == ["job-1", "job-2"]
    assert jobs.tokens_asked == ["", "same"]


def test_a_cycle_of_page_tokens_ends_the_listing_after_the_jobs_read(
    jobs: JobsServicer, jobs_client: VideodagClient
) -> None:
    following = {"": "a", "a": "b", "b": "c", "c": "a"}
    jobs.list_answer = lambda call, asked: _page(
        [_job(f"job-{asked or 'first'}")], following[asked] if call < _CALLS_BEFORE_THE_LAST_PAGE else ""
    )
    received: list[str] = []

    with pytest.raises(Internal, match="after page 4 asks for page 2 again") as raised:
        received.extend(job.id for job in jobs_client.iter_jobs())

    assert raised.value.reason == "PAGE_TOKEN_REPEATED"
    assert received == ["job-first", "job-a", "job-b", "job-c"]
    assert jobs.tokens_asked == ["", "a", "b", "c"]


def test_empty_pages_that_lead_on_are_followed(jobs: JobsServicer, jobs_client: VideodagClient) -> None:
    """AIP-158: a page may hold no job and still not be the last."""
    jobs.list_answer = lambda call, _asked: (
        _page([], f"token-{call}") if call < 10 else _page([_job("job-found")], "")
    )

    assert [job.id for job in jobs_client.iter_jobs()] == ["job-found"]
    assert len(jobs.tokens_asked) == 10


def test_endless_empty_pages_with_new_tokens_end_the_listing_with_internal(
    jobs: JobsServicer, jobs_client: VideodagClient
) -> None:
    jobs.list_answer = lambda call, _asked: _page(
        [], f"token-{call}" if call < _CALLS_BEFORE_THE_LAST_PAGE else ""
    )

    with pytest.raises(Internal) as raised:
        list(jobs_client.iter_jobs())

    assert raised.value.reason == "EMPTY_PAGES_WITHOUT_END"
    assert len(jobs.tokens_asked) == 100


def test_a_job_between_empty_pages_starts_their_count_again(jobs: JobsServicer, jobs_client: VideodagClient) -> None:
    jobs.list_answer = lambda call, _asked: _page(
        [_job(f"job-{call}")] if call % 90 == 0 else [], f"token-{call}" if call < 250 else ""
    )

    assert [job.id for job in jobs_client.iter_jobs()] == ["job-90", "job-180"]


@pytest.mark.parametrize("limit", ["0", "50"])
def test_videodag_jobs_ends_a_listing_that_goes_round_with_an_error(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    jobs.list_answer = _repeating("same")

    assert main(["--server", jobs_target, "jobs", "--limit", limit, "--json"]) == _exit_codes.SERVER_ERROR
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith("error: INTERNAL: the server's job listing would never end")
    assert jobs.tokens_asked == ["", "same"]


def test_videodag_jobs_ends_a_listing_of_empty_pages_with_an_error(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs.list_answer = lambda call, _asked: _page([], "again" if call < _CALLS_BEFORE_THE_LAST_PAGE else "")

    assert main(["--server", jobs_target, "jobs"]) == _exit_codes.SERVER_ERROR
    assert "would never end" in capsys.readouterr().err
    assert len(jobs.tokens_asked) == 2


def test_videodag_jobs_within_its_limit_does_not_ask_for_the_page_that_goes_round(
    jobs: JobsServicer, jobs_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs.list_answer = _repeating("same")

    assert main(["--server", jobs_target, "jobs", "--limit", "1", "--json"]) == _exit_codes.SUCCESS
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == ["job-1"]


def test_a_page_token_of_none_asks_for_the_first_page(jobs: JobsServicer, jobs_client: VideodagClient) -> None:
    """Protobuf reads None as not set, and a paging loop starting from `token = None` had the
    first page; the client's check of its arguments refused it for a while."""
    assert [job.id for job in jobs_client.list_jobs(page_token=None).jobs] == ["job-1"]
    with pytest.raises(TypeError, match=r"^page_token must be a str, got int$"):
        jobs_client.list_jobs(page_token=3)  # type: ignore[arg-type]
    assert jobs.tokens_asked == [""]
