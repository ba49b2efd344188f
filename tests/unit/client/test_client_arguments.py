"""Arguments of the wrong kind are refused before any call, with a TypeError naming the
argument: an untyped caller got protobuf's "bad argument type for built-in operation", or an
AttributeError about the client's own code ('str' object has no attribute 'value')."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fake_servicer import FakeVideoPipelineServicer

from videodag_client import AsyncVideodagClient, Job, JobPage, JobState, VideodagClient


@pytest.mark.parametrize("call", [
    lambda client: client.get_job(123),
    lambda client: client.cancel_job(123),
    lambda client: client.delete_job(123),
    lambda client: client.watch_job(123),
])
def test_a_job_id_that_is_not_a_str_is_a_type_error_naming_it(
    client: VideodagClient, servicer: FakeVideoPipelineServicer, call: Callable[[Any], object]
) -> None:
    with pytest.raises(TypeError, match=r"^job_id must be a str, got int$"):
        call(client)
    assert servicer.requests == []


def test_a_pipeline_id_that_is_not_a_str_is_a_type_error_naming_it(client: VideodagClient) -> None:
    with pytest.raises(TypeError, match=r"^pipeline_id must be a str, got int$"):
        client.get_pipeline(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pipeline_id must be a str, got int$"):
        client.upload_and_run(b"video", 5)  # type: ignore[arg-type]


def test_options_given_as_a_dict_are_a_type_error_saying_how_to_make_them(
    client: VideodagClient, servicer: FakeVideoPipelineServicer
) -> None:
    with pytest.raises(TypeError, match=r"^options must be a RunOptions, got dict: RunOptions\(\*\*options\) makes "
                                        "one of a dict$"):
        client.upload_and_run(b"video", "motion_v1", {"frame_stride": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^options must be a RunOptions, got int$"):
        client.submit_job(b"video", "motion_v1", 5)  # type: ignore[arg-type]
    assert servicer.requests == []


@pytest.mark.parametrize(("states", "said"), [
    (["RUNNING"], r"^states must hold JobState members, got 'RUNNING' \(JobState\.RUNNING\)$"),
    ([2], r"^states must hold JobState members, got 2$"),
    (JobState.RUNNING, r"^states must be an iterable of JobState, got one JobState: \[JobState\.X\]$"),
    ("RUNNING", r"^states must be an iterable of JobState, got one str: \[JobState\.X\]$"),
])
def test_states_other_than_job_states_are_a_type_error_naming_what_was_given(
    client: VideodagClient, states: object, said: str
) -> None:
    with pytest.raises(TypeError, match=said):
        client.list_jobs(states=states)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=said):
        client.iter_jobs(states=states)  # type: ignore[arg-type]  # at the call, not at its first next()

    async def listed() -> None:
        async with AsyncVideodagClient.from_client(client) as async_client:
            await async_client.list_jobs(states=states)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=said):
        asyncio.run(listed())


def test_each_page_of_iter_jobs_takes_its_timeout(client: VideodagClient, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[tuple[JobState, ...], float | None]] = []

    def one_empty_page(*, states: tuple[JobState, ...], page_size: int, page_token: str,
                       timeout: float | None) -> JobPage:
        asked.append((states, timeout))
        return JobPage((), "")

    monkeypatch.setattr(client, "list_jobs", one_empty_page)
    jobs: list[Job] = list(client.iter_jobs(states=[JobState.QUEUED], timeout=2.5))
    assert jobs == [] and asked == [((JobState.QUEUED,), 2.5)]

