"""SubmitJob when an outage leaves it unknown whether the job was recorded: a Redis stall past the
socket timeout fails the call, and Redis applies the command once the stall ends. The video is
kept (such a job would fail without it), the caller is told the job may exist, and a video no
job came of is removed by maintenance after a grace. Against SQLite and a real redis-server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fakes.job_queue import QueueThatRunsNothing
from videodag_service.dag import DagPipelineService
from videodag_service.errors import JobStoreUnavailable
from videodag_service.jobs import DirectoryUploadStorage, Job, JobRequest, JobService, JobState, JobStore
from videodag_service.jobs.model import RunClaim
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.sqlite_store import SqliteJobStore

VIDEO = b"\x00" * 4096  # never decoded here: no worker runs
HOUR = 3600.0


class _Outage(ConnectionError):
    """Stands for redis-py's TimeoutError: one of the store's `outage_errors`."""


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened: JobStore
    if request.param == "sqlite":
        opened = SqliteJobStore(tmp_path / "data")
    else:
        server = request.getfixturevalue("redis_server")
        opened = RedisJobStore(redis.Redis.from_url(server.url, decode_responses=True), key_prefix=uuid.uuid4().hex)
    yield opened
    opened.close()


class _Service:
    """A job service whose clock a test moves on, and whose store's next create meets an outage."""

    def __init__(self, store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.time()
        self.store = store
        self.uploads = DirectoryUploadStorage(tmp_path / "uploads")
        self.queue = QueueThatRunsNothing()
        self.service = JobService(store, self.queue, self.uploads, DagPipelineService.from_folder(),
                                  max_upload_bytes=10**6, retention_seconds=HOUR, clock=lambda: self.now)
        self._monkeypatch = monkeypatch
        monkeypatch.setattr(store, "outage_errors", (_Outage,))

    def submit_through_an_outage(self, *, recorded: bool, key: str | None = None) -> JobStoreUnavailable:
        """The next create fails as a stall makes it fail; applied all the same when `recorded`."""
        create = self.store.create

        def create_in_an_outage(job: Job) -> Job:
            self._monkeypatch.setattr(self.store, "create", create)
            if recorded:
                create(job)
            raise _Outage("Timeout reading from 127.0.0.1:6379 (injected)")

        self._monkeypatch.setattr(self.store, "create", create_in_an_outage)
        with pytest.raises(JobStoreUnavailable) as refused:
            self.submit(key)
        return refused.value

    def submit(self, key: str | None = None) -> Job:
        return self.service.submit(JobRequest("frame_stats_v1", idempotency_key=key), iter([VIDEO]))

    def maintain_after(self, seconds: float) -> None:
        self.now += seconds
        self.service.run_maintenance()


@pytest.fixture
def jobs(store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Service:
    return _Service(store, tmp_path, monkeypatch)


@pytest.mark.parametrize("key", [None, "the-key"])
def test_a_job_recorded_though_the_outage_took_the_answer_keeps_its_video(jobs: _Service, key: str | None) -> None:
    """The video was deleted at once, and the job the store recorded after the stall FAILED when
    it ran, its stored copy missing; the caller, told only to retry, made a second job."""
    refused = jobs.submit_through_an_outage(recorded=True, key=key)

    job_id = refused.details.metadata["job_id"]
    assert refused.details.retry_after_seconds is not None
    assert f"it may have been created all the same, as job {job_id}" in refused.message
    job = jobs.store.get(job_id)
    assert job.state is JobState.QUEUED
    assert list(jobs.uploads.refs()) == [job.video.ref], "kept for the job"

    jobs.maintain_after(2 * HOUR)
    assert list(jobs.uploads.refs()) == [job.video.ref], "its job is queued: the video stays"
    assert [dispatched.id for dispatched in jobs.queue.dispatched] == [job_id], "handed over by maintenance"
    if key is not None:
        assert "a retry with the same idempotency key returns it if so" in refused.message
        assert jobs.submit(key).id == job_id
        assert list(jobs.uploads.refs()) == [job.video.ref], "the retry's video was not kept"
    else:
        assert "a retry without an idempotency key may create a second job" in refused.message


def test_a_video_whose_job_was_never_recorded_is_removed_after_the_grace(jobs: _Service) -> None:
    refused = jobs.submit_through_an_outage(recorded=False)
    (ref,) = jobs.uploads.refs()
    assert Path(ref).stem == refused.details.metadata["job_id"]

    jobs.maintain_after(HOUR / 2)
    assert list(jobs.uploads.refs()) == [ref], "its job may still be on its way to the store"
    jobs.maintain_after(HOUR)
    assert list(jobs.uploads.refs()) == []


def test_videos_of_queued_jobs_stay_and_those_of_finished_jobs_go_once_old(jobs: _Service) -> None:
    """Old enough, a finished job's video that its run could not delete goes with the strays."""
    queued, finished = jobs.submit(), jobs.submit()
    jobs.store.claim(finished.id, 1, jobs.now)
    jobs.store.finish(RunClaim(finished.id, 1, jobs.now), jobs.now, jobs.now + 10 * HOUR, error=None)

    jobs.maintain_after(2 * HOUR)

    assert list(jobs.uploads.refs()) == [queued.video.ref]


def test_a_creation_the_store_refused_deletes_the_video_at_once(jobs: _Service, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Not an outage: the store answered, and no job was made."""
    def refuse(job: Job) -> Job:
        raise RuntimeError("refused (injected)")

    monkeypatch.setattr(jobs.store, "create", refuse)
    with pytest.raises(RuntimeError):
        jobs.submit()
    assert list(jobs.uploads.refs()) == []
