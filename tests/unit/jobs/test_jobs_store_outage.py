"""A running job waits out an outage of its store (a Redis restart or failover) instead of failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import dag_with_test_pipelines
from fakes.media import write_indexed_video
from videodag_service.dag import DagPipelineService
from videodag_service.jobs import (
    DirectoryUploadStorage,
    Job,
    JobExecutor,
    JobRequest,
    JobService,
    JobState,
    SqliteJobStore,
)
from videodag_service.jobs.execution import JobInterrupted
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.video import SamplingOptions, VideoFilePipelineService

FRAMES = 30


class _Outage(ConnectionError):
    """Stands for redis-py's ConnectionError: one of the store's `outage_errors`."""


class _StoreWithOutages(SqliteJobStore):
    """A real store whose frame writes fail while an outage lasts: from frame `from_frame` on, the
    next `failures` writes raise. With `reply_lost`, each failed write was stored before the error,
    as when a connection drops between the write and its reply."""

    outage_errors = (_Outage,)

    def __init__(self, root: Path, *, from_frame: int, failures: int, reply_lost: bool = False,
                 patience: float = 10.0, claim_failures: int = 0) -> None:
        super().__init__(root)
        self._patience = patience
        self.from_frame = from_frame
        self.failures = failures
        self.reply_lost = reply_lost
        self.calls = 0
        self.claim_failures = claim_failures
        self.claims = 0

    @property
    def outage_patience_seconds(self) -> float:
        return self._patience

    def claim(self, job_id: str, attempt: int, now: float) -> Job | None:
        """The next `claim_failures` claims raise, applied first with `reply_lost`."""
        self.claims += 1
        if self.claim_failures > 0:
            self.claim_failures -= 1
            if self.reply_lost:
                super().claim(job_id, attempt, now)
            raise _Outage("Connection refused (injected)")
        return super().claim(job_id, attempt, now)

    def append_frame(self, run: RunClaim, frame: Any) -> bool:
        self.calls += 1
        if frame.frame_index >= self.from_frame and self.failures > 0:
            self.failures -= 1
            if self.reply_lost:
                super().append_frame(run, frame)
            raise _Outage("Connection refused (injected)")
        return super().append_frame(run, frame)


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> DagPipelineService:
    return dag_with_test_pipelines(tmp_path_factory.mktemp("pipelines"), {})


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("media") / "clip.avi", FRAMES, fps=25.0)


def _run(tmp_path: Path, dag: DagPipelineService, clip: Path, store: SqliteJobStore,
         **execute: Any) -> tuple[JobState | None, Job]:
    uploads = DirectoryUploadStorage(tmp_path / "data" / "uploads")
    job_id = new_job_id()
    data = clip.read_bytes()
    video = uploads.store(lambda: job_id, iter([data]), max_upload_bytes=10**7, declared_size=None,
                          declared_sha256=None, file_name=clip.name)
    store.create(Job(job_id, JobState.QUEUED, "frame_stats_v1", SamplingOptions(), video, 0.0))
    executor = JobExecutor(store, uploads, dag, VideoFilePipelineService(dag), job_timeout_seconds=60,
                           retention_seconds=60)
    try:
        return executor.execute(job_id, 1, **execute), store.get(job_id)
    finally:
        store.close()


@pytest.mark.parametrize("reply_lost", [False, True], ids=["write refused", "reply lost"])
def test_a_job_waits_out_a_short_outage_and_stores_every_frame_once(
    tmp_path: Path, dag: DagPipelineService, clip: Path, reply_lost: bool
) -> None:
    store = _StoreWithOutages(tmp_path / "data", from_frame=10, failures=4, reply_lost=reply_lost)
    state, job = _run(tmp_path, dag, clip, store)

    assert state is JobState.SUCCEEDED, job.error
    assert store.failures == 0 and store.calls == FRAMES + 4, "the frame in the outage was written again"
    assert job.frames_done == FRAMES and job.summary is not None and job.summary.frames_processed == FRAMES
    reopened = SqliteJobStore(tmp_path / "data")
    assert [frame.frame_index for frame in reopened.frames_after(job.id, None, 100)] == list(range(FRAMES))
    reopened.close()


def test_an_outage_longer_than_the_patience_stops_the_run_and_queues_the_job_again_in_its_attempt(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    """Not FAILED: once the store is back, the job runs again, as after a clean shutdown."""
    store = _StoreWithOutages(tmp_path / "data", from_frame=3, failures=10**6, patience=0.5)

    state, job = _run(tmp_path, dag, clip, store)

    assert state is JobState.QUEUED
    assert (job.state, job.attempt, job.frames_done, job.error) == (JobState.QUEUED, 1, 0, None)


@pytest.mark.parametrize("reply_lost", [False, True], ids=["claim refused", "reply lost"])
def test_a_claim_waits_out_a_short_outage_and_the_job_runs(
    tmp_path: Path, dag: DagPipelineService, clip: Path, reply_lost: bool
) -> None:
    """The claim raised at once, and the worker's task failed with the job still QUEUED: nothing
    ever ran it again. A claim whose reply the outage lost is known again as this worker's."""
    store = _StoreWithOutages(tmp_path / "data", from_frame=FRAMES, failures=0, reply_lost=reply_lost,
                              claim_failures=3)

    state, job = _run(tmp_path, dag, clip, store)

    assert state is JobState.SUCCEEDED, job.error
    assert store.claims == 4
    assert (job.attempt, job.frames_done) == (1, FRAMES)


def test_a_claim_that_outlasts_the_patience_leaves_the_job_queued_and_raises_the_outage(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    """Unclaimed, the job is for recovery to hand over again; the task's failure says why."""
    store = _StoreWithOutages(tmp_path / "data", from_frame=FRAMES, failures=0, claim_failures=10**6, patience=0.5)

    with pytest.raises(_Outage):
        _run(tmp_path, dag, clip, store)

    reopened = SqliteJobStore(tmp_path / "data")
    try:
        (job,) = reopened.list_jobs(10, None, ()).jobs
        assert (job.state, job.attempt) == (JobState.QUEUED, 1)
    finally:
        reopened.close()


def test_a_shutdown_during_an_outage_interrupts_the_job_at_once(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    store = _StoreWithOutages(tmp_path / "data", from_frame=3, failures=10**6)
    stopping = False

    def should_stop() -> bool:
        return stopping

    def stop_once_the_outage_began() -> bool:
        nonlocal stopping
        stopping = stopping or store.calls > 5
        return should_stop()

    with pytest.raises(JobInterrupted):
        _run(tmp_path, dag, clip, store, should_stop=stop_once_the_outage_began)
    assert store.calls < 20, "it did not wait out the whole patience"


class _QueueOutOfReach:
    """A queue whose hand-over fails as RQ's enqueue does when Redis drops the connection."""

    def dispatch(self, job: Job) -> None:
        raise _Outage("Connection reset by peer (injected)")

    def depth(self) -> int:
        return 0  # nothing was ever handed over

    def close(self) -> None:
        return None


def test_a_job_stored_but_not_handed_over_is_returned_not_refused_with_a_retry(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    """Refused UNAVAILABLE "retry shortly" once the job is stored, the caller (or its gRPC retry
    policy, refusals being trailers-only) would submit again, and both jobs would run."""
    store = _StoreWithOutages(tmp_path / "data", from_frame=0, failures=0)
    uploads = DirectoryUploadStorage(tmp_path / "data" / "uploads")
    service = JobService(store, _QueueOutOfReach(), uploads, dag,  # type: ignore[arg-type]
                         max_upload_bytes=10**7, retention_seconds=60)
    try:
        job = service.submit(JobRequest("frame_stats_v1"), iter([clip.read_bytes()]))
        assert store.get(job.id).state is JobState.QUEUED
        assert [listed.id for listed in store.list_jobs(10, None, ()).jobs] == [job.id]
        assert list(uploads.refs()) == [job.video.ref]
    finally:
        store.close()
