"""The `JobStore` contract, the same tests against SQLite and a real redis-server."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fakes.redis_server import RedisServer
from videodag_service.errors import FailedPrecondition, JobNotFound
from videodag_service.jobs import Job, JobError, JobFrame, JobState, JobStore, JobSummary, SqliteJobStore, StoredVideo
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.store import StoredResultsLost
from videodag_service.jobs.watch import watch_job
from videodag_service.video import SamplingOptions, VideoInfo

NOW = 1_700_000_000.0
SUMMARY = JobSummary("p", "1", 0, 0, 0.5, 0.1, frames_in_video=7)  # no frame processed: as many stored


def summary_of(frames_processed: int) -> JobSummary:
    """SUMMARY of a run that processed, and so stored, `frames_processed` frames."""
    return dataclasses.replace(SUMMARY, frames_processed=frames_processed)
INFO = VideoInfo(fps=25.0, frame_count=10, width=64, height=48, duration_seconds=0.4, codec="MJPG", size_bytes=99)


StoreFactory = Callable[..., JobStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[JobStore] = []

    def open_store(**options: float) -> JobStore:
        if request.param == "sqlite":
            store: JobStore = SqliteJobStore(tmp_path / "data")
        else:
            server = request.getfixturevalue("redis_server")
            store = RedisJobStore(
                redis.Redis.from_url(server.url, decode_responses=True), key_prefix=uuid.uuid4().hex, **options
            )
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> JobStore:
    return make_store()


def queued_job(key: str | None = None, created_at: float = NOW, pipeline_id: str = "p") -> Job:
    job_id = new_job_id(created_at)
    return Job(
        id=job_id,
        state=JobState.QUEUED,
        pipeline_id=pipeline_id,
        sampling=SamplingOptions(frame_stride=2, max_frames=5),
        video=StoredVideo(f"{job_id}.avi", 1234, "ab" * 32),
        created_at=created_at,
        file_name="clip.avi",
        idempotency_key=key,
    )


def frame(index: int) -> JobFrame:
    return JobFrame(index, index / 25, {"stats": {"mean": index * 1.5}, "list": [1, "two", None]})


def test_a_created_job_reads_back_equal(store: JobStore) -> None:
    job = queued_job(key="k-1")
    assert store.create(job) == job
    assert store.get(job.id) == job
    assert store.find_by_idempotency_key("k-1") == job
    assert store.find_by_idempotency_key("k-2") is None
    with pytest.raises(JobNotFound):
        store.get(new_job_id())


def test_a_second_job_with_the_same_key_is_not_stored(store: JobStore) -> None:
    first = store.create(queued_job(key="same"))
    second = queued_job(key="same")

    assert store.create(second) == first
    with pytest.raises(JobNotFound):
        store.get(second.id)


def test_a_claimed_job_stores_frames_of_its_attempt_only(store: JobStore) -> None:
    job = store.create(queued_job())
    assert store.claim(job.id, attempt=2, now=NOW) is None, "not the current attempt"
    claimed = store.claim(job.id, attempt=1, now=NOW + 1)
    assert claimed is not None and claimed.state is JobState.RUNNING and claimed.started_at == NOW + 1
    assert store.claim(job.id, attempt=1, now=NOW) is None, "already running"

    run = RunClaim.of(claimed)
    assert run == RunClaim(job.id, 1, NOW + 1)
    assert store.record_video(run, INFO, frames_total=5)
    assert all(store.append_frame(run, frame(index)) for index in (0, 2, 4))
    assert not store.append_frame(RunClaim(job.id, 2, NOW + 1), frame(6)), "a stale attempt cannot write"

    assert store.append_frame(run, frame(4)), "written again after an outage lost the reply"

    assert store.frames_after(job.id, None, 100) == [frame(0), frame(2), frame(4)]
    assert store.frames_after(job.id, 0, 100) == [frame(2), frame(4)]
    assert store.frames_after(job.id, 0, 1) == [frame(2)]
    running = store.get(job.id)
    assert (running.frames_done, running.frames_total, running.video_info) == (3, 5, INFO)


def test_a_claim_repeated_because_an_outage_lost_its_reply_returns_the_job_it_claimed(store: JobStore) -> None:
    """A worker whose claim reached the store, its reply lost, tries it again: taken for another
    worker's, the claim would leave the job RUNNING with nobody to run it until its lease ran out."""
    job = store.create(queued_job())
    claimed = store.claim(job.id, 1, NOW)
    assert claimed is not None

    assert store.claim(job.id, 1, NOW) == claimed
    assert store.claim(job.id, 1, NOW + 0.001) is None, "another claim of the attempt"
    assert store.claim(job.id, 2, NOW) is None, "another attempt"
    store.append_frame(RunClaim.of(claimed), frame(0))
    store.cancel(job.id, NOW + 1, NOW + 60)
    assert store.claim(job.id, 1, NOW) is None, "no longer running"


def test_a_success_replaces_the_estimated_frame_total_with_the_frames_done(store: JobStore) -> None:
    """A variable frame rate or a damaged index makes the estimate miss: a finished job showed
    300/325 frames, for good."""
    succeeded, failed = store.create(queued_job()), store.create(queued_job())
    for job in (succeeded, failed):
        run = RunClaim(job.id, 1, NOW)
        store.claim(job.id, 1, NOW)
        store.record_video(run, INFO, frames_total=5)
        store.append_frame(run, frame(0))
        store.append_frame(run, frame(1))

    store.finish(RunClaim(succeeded.id, 1, NOW), NOW + 5, NOW + 65, summary=summary_of(2))
    store.finish(RunClaim(failed.id, 1, NOW), NOW + 5, NOW + 65, error=JobError("INTERNAL", "INTERNAL", "x"))

    done, broken = store.get(succeeded.id), store.get(failed.id)
    assert (done.frames_done, done.frames_total) == (2, 2)
    assert (broken.frames_done, broken.frames_total) == (2, 5), "a failure's frames fell short of the video's"


def test_a_success_with_fewer_results_stored_than_processed_is_refused_and_the_job_stays_running(
    store: JobStore,
) -> None:
    """Results the store lost (Redis back from a snapshot taken mid-run, the claim kept) made a
    SUCCEEDED job with holes in its results; its run releases it to run again instead."""
    job = store.create(queued_job())
    run = RunClaim(job.id, 1, NOW)
    store.claim(job.id, 1, NOW)
    store.append_frame(run, frame(0))

    with pytest.raises(StoredResultsLost, match=f"job {job.id}: .*2"):
        store.finish(run, NOW + 5, NOW + 65, summary=summary_of(2))

    assert (store.get(job.id).state, store.get(job.id).frames_done) == (JobState.RUNNING, 1)
    assert store.finish(run, NOW + 5, NOW + 65, error=JobError("INTERNAL", "INTERNAL", "x")), "a failure is taken"


def test_finish_records_the_outcome_and_its_expiry(store: JobStore) -> None:
    succeeded, failed = store.create(queued_job()), store.create(queued_job())
    error = JobError("INVALID_ARGUMENT", "VIDEO_UNREADABLE", "Unable to read video file", {"a": "b"})
    for job in (succeeded, failed):
        store.claim(job.id, 1, NOW)

    assert store.finish(RunClaim(succeeded.id, 1, NOW), NOW + 5, NOW + 65, summary=SUMMARY)
    assert store.finish(RunClaim(failed.id, 1, NOW), NOW + 6, NOW + 66, error=error)
    assert not store.finish(RunClaim(failed.id, 1, NOW), NOW + 7, NOW + 67, summary=SUMMARY), "finished once only"

    done = store.get(succeeded.id)
    assert (done.state, done.summary) == (JobState.SUCCEEDED, SUMMARY)
    assert (done.finished_at, done.expire_at) == (NOW + 5, NOW + 65)
    broken = store.get(failed.id)
    assert (broken.state, broken.error, broken.summary) == (JobState.FAILED, error, None)


def test_cancel_stops_the_worker_writes_and_refuses_finished_jobs(store: JobStore) -> None:
    running, queued, done = (store.create(queued_job()) for _ in range(3))
    store.claim(running.id, 1, NOW)
    store.claim(done.id, 1, NOW)
    store.append_frame(RunClaim(running.id, 1, NOW), frame(0))
    store.finish(RunClaim(done.id, 1, NOW), NOW, NOW + 60, summary=SUMMARY)

    cancelled, previous = store.cancel(running.id, NOW + 1, NOW + 61)
    assert (cancelled.state, previous, cancelled.expire_at) == (JobState.CANCELLED, JobState.RUNNING, NOW + 61)
    assert not store.append_frame(RunClaim(running.id, 1, NOW), frame(1))
    assert not store.finish(RunClaim(running.id, 1, NOW), NOW, NOW, summary=SUMMARY)
    assert store.frames_after(running.id, None, 10) == [frame(0)], "results before the cancel are kept"
    assert store.cancel(queued.id, NOW, NOW)[1] is JobState.QUEUED
    assert store.claim(queued.id, 1, NOW) is None
    assert store.cancel(queued.id, NOW + 9, NOW + 9)[1] is JobState.CANCELLED, "a second cancel changes nothing"
    with pytest.raises(FailedPrecondition) as finished:
        store.cancel(done.id, NOW, NOW)
    assert finished.value.reason == "JOB_FINISHED"
    assert finished.value.details.metadata == {"job_id": done.id, "state": "SUCCEEDED"}
    with pytest.raises(JobNotFound):
        store.cancel(new_job_id(), NOW, NOW)


def test_delete_removes_finished_jobs_with_their_frames_and_key(store: JobStore) -> None:
    job = store.create(queued_job(key="gone"))
    with pytest.raises(FailedPrecondition):
        store.delete(job.id)
    store.claim(job.id, 1, NOW)
    store.append_frame(RunClaim(job.id, 1, NOW), frame(0))
    store.finish(RunClaim(job.id, 1, NOW), NOW, NOW + 60, summary=summary_of(1))

    assert store.delete(job.id).id == job.id

    with pytest.raises(JobNotFound):
        store.get(job.id)
    assert store.frames_after(job.id, None, 10) == []
    assert store.find_by_idempotency_key("gone") is None
    with pytest.raises(JobNotFound):
        store.delete(job.id)


def test_list_pages_newest_first_with_a_state_filter(store: JobStore) -> None:
    jobs = [store.create(queued_job(created_at=NOW + i)) for i in range(7)]
    for job in jobs[::3]:
        store.cancel(job.id, NOW, NOW + 60)
    newest_first = [job.id for job in reversed(jobs)]

    first = store.list_jobs(3, None, ())
    second = store.list_jobs(3, newest_first[2], ())
    last = store.list_jobs(3, newest_first[5], ())
    cancelled = store.list_jobs(2, None, (JobState.CANCELLED,))

    assert [j.id for j in first.jobs] == newest_first[:3] and first.next_page_token
    assert [j.id for j in second.jobs] == newest_first[3:6]
    assert [j.id for j in last.jobs] == newest_first[6:] and last.next_page_token == ""
    assert [j.id for j in cancelled.jobs] == [jobs[6].id, jobs[3].id] and cancelled.next_page_token
    assert [j.id for j in store.list_jobs(5, jobs[3].id, (JobState.CANCELLED,)).jobs] == [jobs[0].id]


def test_purge_removes_only_finished_jobs_past_their_expiry(store: JobStore) -> None:
    expired, fresh, running = (store.create(queued_job()) for _ in range(3))
    store.cancel(expired.id, NOW, NOW + 10)
    store.cancel(fresh.id, NOW, NOW + 100)
    store.claim(running.id, 1, NOW)

    purged = store.purge_expired(NOW + 50)

    assert [job.id for job in purged] == [expired.id]
    with pytest.raises(JobNotFound):
        store.get(expired.id)
    assert store.get(fresh.id).state is JobState.CANCELLED
    assert store.get(running.id).state is JobState.RUNNING


def test_purge_leaves_the_jobs_it_is_told_to_keep_for_later(store: JobStore) -> None:
    watched, other = (store.create(queued_job()) for _ in range(2))
    store.cancel(watched.id, NOW, NOW + 10)
    store.cancel(other.id, NOW, NOW + 10)

    assert [job.id for job in store.purge_expired(NOW + 50, keep={watched.id})] == [other.id]
    assert store.get(watched.id).state is JobState.CANCELLED
    assert [job.id for job in store.purge_expired(NOW + 50)] == [watched.id]


def test_wait_for_change_wakes_up_when_a_frame_is_stored(store: JobStore) -> None:
    job = store.create(queued_job())
    claimed = store.claim(job.id, 1, NOW)
    assert claimed is not None
    appender = threading.Timer(0.2, lambda: store.append_frame(RunClaim(job.id, 1, NOW), frame(0)))
    appender.start()
    started = time.monotonic()
    try:
        store.wait_for_change(job.id, claimed.revision, None, timeout=5.0)
    finally:
        appender.join()
    assert time.monotonic() - started < 2.0
    assert store.get(job.id).revision > claimed.revision


def test_after_frame_index_minus_one_means_from_the_first_frame(store: JobStore) -> None:
    """The contract's "unset (or -1)": Redis refused the stream id "-1-1" the store made of it."""
    job = store.create(queued_job())
    claimed = store.claim(job.id, 1, NOW)
    assert claimed is not None
    appender = threading.Timer(0.2, lambda: store.append_frame(RunClaim(job.id, 1, NOW), frame(0)))
    appender.start()
    try:
        store.wait_for_change(job.id, claimed.revision, -1, timeout=5.0)
    finally:
        appender.join()
    store.append_frame(RunClaim(job.id, 1, NOW), frame(1))

    assert store.frames_after(job.id, -1, 100) == [frame(0), frame(1)]
    assert store.frames_after(job.id, -1, 1) == [frame(0)]


def test_a_wait_for_change_sleeps_through_other_jobs_frames(store: JobStore) -> None:
    """A watch of a queued job is not woken by each frame of a running one: woken, it reads
    its job again, and sixty idle watches made a run three times slower."""
    running, watched = store.create(queued_job()), store.create(queued_job())
    assert store.claim(running.id, 1, NOW) is not None
    woken: list[float] = []

    def watch() -> None:
        started = time.monotonic()
        store.wait_for_change(watched.id, watched.revision, None, timeout=0.2)  # within Redis's state poll
        woken.append(time.monotonic() - started)

    waiter = threading.Thread(target=watch)
    waiter.start()
    for index in range(10):
        store.append_frame(RunClaim(running.id, 1, NOW), frame(index))
        time.sleep(0.01)
    waiter.join(5)
    assert woken and woken[0] >= 0.18, "a frame of another job woke it"


def test_sqlite_recovery_reruns_interrupted_jobs_from_the_start(tmp_path: Path) -> None:
    first = SqliteJobStore(tmp_path)
    interrupted, queued = first.create(queued_job()), first.create(queued_job())
    first.claim(interrupted.id, 1, NOW)
    first.append_frame(RunClaim(interrupted.id, 1, NOW), frame(0))
    first.close()  # the process ends with a job RUNNING

    second = SqliteJobStore(tmp_path)
    try:
        recovered = second.recover(NOW + 1, max_attempts=3, expire_at=NOW + 60)
        requeued = second.get(interrupted.id)
        assert [job.id for job in recovered] == sorted([interrupted.id, queued.id])
        assert (requeued.state, requeued.attempt, requeued.frames_done) == (JobState.QUEUED, 2, 0)
        assert second.frames_after(interrupted.id, None, 10) == [], "partial results are discarded"
        assert second.recover(NOW + 2, 3, NOW + 60) == [], "a process recovers once, at its start"
    finally:
        second.close()


def test_sqlite_recovery_gives_up_a_job_interrupted_on_every_attempt(tmp_path: Path) -> None:
    job = queued_job()
    for attempt in (1, 2, 3):
        store = SqliteJobStore(tmp_path)
        if attempt == 1:
            store.create(job)
        store.recover(NOW, max_attempts=3, expire_at=NOW + 60)
        assert store.claim(job.id, attempt, NOW) is not None
        store.close()  # killed while running, every time

    store = SqliteJobStore(tmp_path)
    try:
        recovered = store.recover(NOW, max_attempts=3, expire_at=NOW + 60)
        given_up = store.get(job.id)
    finally:
        store.close()
    assert recovered == [given_up], "returned, so its caller deletes its video"
    assert given_up.state is JobState.FAILED and given_up.error is not None
    assert (given_up.error.status_code, given_up.error.reason) == ("INTERNAL", "JOB_INTERRUPTED")
    assert given_up.expire_at == NOW + 60


def test_redis_recovery_requeues_jobs_whose_lease_ran_out(redis_server: RedisServer) -> None:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix="leases", lease_seconds=0.3, dispatch_grace_seconds=0.3)
    try:
        lost, alive = store.create(queued_job()), store.create(queued_job())
        stranded = store.create(queued_job())  # never handed to a worker
        runs = {}
        for job in (lost, alive):
            claimed = store.claim(job.id, 1, time.time())
            assert claimed is not None
            runs[job.id] = RunClaim.of(claimed)
            store.append_frame(runs[job.id], frame(0))
        time.sleep(0.4)
        assert store.renew_lease(runs[alive.id])

        recovered = store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60)

        assert {job.id for job in recovered} == {lost.id, stranded.id}
        requeued = store.get(lost.id)
        assert (requeued.state, requeued.attempt, requeued.frames_done) == (JobState.QUEUED, 2, 0)
        assert store.frames_after(lost.id, None, 10) == []
        assert not store.append_frame(runs[lost.id], frame(1)), "the lost worker can no longer write"
        assert store.get(alive.id).state is JobState.RUNNING
    finally:
        store.close()


def test_redis_refuses_the_writes_of_a_run_whose_claim_it_forgot(tmp_path: Path) -> None:
    """A Redis persisted by snapshots comes back from a crash without a claim it took: RQ hands
    the job's task out again, a second worker claims the same attempt, and the first run, still
    going, must not write into the second's (its frames mixed in, a stream entry refused as out
    of order, its end taken for the job's)."""
    server = RedisServer(tmp_path / "redis")
    workers = [RedisJobStore(redis.Redis.from_url(server.url, decode_responses=True), key_prefix="forgot")
               for _ in range(2)]
    first_worker, second_worker = workers
    try:
        job = first_worker.create(queued_job())
        server.save_snapshot()
        first_claim = first_worker.claim(job.id, 1, NOW)
        assert first_claim is not None
        first = RunClaim.of(first_claim)
        assert first_worker.append_frame(first, frame(0)) and first_worker.append_frame(first, frame(1))

        server.crash_to_snapshot()
        second_claim = second_worker.claim(job.id, 1, NOW + 5)
        assert second_claim is not None, "the job is QUEUED again in the snapshot"
        second = RunClaim.of(second_claim)
        assert second_worker.append_frame(second, frame(0))

        assert not first_worker.append_frame(first, frame(2)), "the forgotten run's results are refused"
        assert not first_worker.record_video(first, INFO, frames_total=5)
        assert not first_worker.renew_lease(first)
        assert not first_worker.finish(first, NOW + 6, NOW + 60, summary=SUMMARY), "and its end"
        assert not first_worker.release(first, NOW + 6)
        assert second_worker.append_frame(second, frame(1))
        assert second_worker.finish(second, NOW + 7, NOW + 60, summary=summary_of(2))
        assert second_worker.frames_after(job.id, None, 10) == [frame(0), frame(1)]
        assert second_worker.get(job.id).state is JobState.SUCCEEDED
    finally:
        for worker in workers:
            worker.close()
        server.stop()


def test_redis_back_from_a_snapshot_taken_mid_run_refuses_the_runs_success(tmp_path: Path) -> None:
    """The claim survived, results stored after the snapshot did not: the run went on and the job
    SUCCEEDED with frames 4-7 missing."""
    server = RedisServer(tmp_path / "redis")
    store = RedisJobStore(redis.Redis.from_url(server.url, decode_responses=True), key_prefix="mid-run")
    try:
        job = store.create(queued_job())
        claimed = store.claim(job.id, 1, NOW)
        assert claimed is not None
        run = RunClaim.of(claimed)
        for index in range(12):
            if index == 4:
                server.save_snapshot()
            if index == 8:
                server.crash_to_snapshot()
            assert store.append_frame(run, frame(index))

        with pytest.raises(StoredResultsLost):
            store.finish(run, NOW + 5, NOW + 65, summary=summary_of(12))
        assert store.release(run, NOW + 6), "its run releases it, to run again from the start"
        assert (store.get(job.id).state, store.frames_after(job.id, None, 100)) == (JobState.QUEUED, [])
    finally:
        store.close()
        server.stop()


def test_redis_recovery_returns_a_job_cancelled_while_it_ran_once_its_lease_ran_out(redis_server: RedisServer) -> None:
    """So its video is deleted even when its worker vanished before its run could stop."""
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix="cancelled-leases", lease_seconds=0.3)
    try:
        job = store.create(queued_job())
        claimed = store.claim(job.id, 1, time.time())
        assert claimed is not None
        store.cancel(job.id, time.time(), time.time() + 60)
        assert store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60) == [], "the lease runs yet"
        assert not store.renew_lease(RunClaim.of(claimed)), "a cancelled run's lease is not renewed"
        time.sleep(0.4)

        recovered = store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60)

        assert [(found.id, found.state, found.attempt) for found in recovered] == [(job.id, JobState.CANCELLED, 1)]
        assert store.recover(time.time(), max_attempts=3, expire_at=time.time() + 60) == [], "returned once"
    finally:
        store.close()


def test_a_replay_cut_short_by_a_delete_ends_not_found_not_as_a_success(store: JobStore) -> None:
    """The finished job's frames go out page by page; deleting it meanwhile must not end the
    stream with the final state as if every frame had been sent."""
    job = store.create(queued_job())
    store.claim(job.id, 1, NOW)
    for index in range(300):  # more than one page of the replay
        store.append_frame(RunClaim(job.id, 1, NOW), frame(index))
    store.finish(RunClaim(job.id, 1, NOW), NOW, NOW + 60, summary=summary_of(300))

    events = watch_job(store, job.id)
    first = next(events)
    assert isinstance(first, JobFrame) and first.frame_index == 0
    store.delete(job.id)
    with pytest.raises(JobNotFound):
        for event in events:
            assert isinstance(event, JobFrame), "no final state may follow a cut-short replay"


def test_a_whole_replay_ends_with_the_final_state_after_every_frame(store: JobStore) -> None:
    job = store.create(queued_job())
    store.claim(job.id, 1, NOW)
    for index in range(300):
        store.append_frame(RunClaim(job.id, 1, NOW), frame(index))
    store.finish(RunClaim(job.id, 1, NOW), NOW, NOW + 60, summary=summary_of(300))

    events = list(watch_job(store, job.id))
    assert [event.frame_index for event in events[:-1]] == list(range(300))  # type: ignore[union-attr]
    assert isinstance(events[-1], Job) and events[-1].state is JobState.SUCCEEDED


def running_with_a_result(store: JobStore) -> tuple[Job, RunClaim]:
    """A job claimed in its first attempt at NOW, its video opened and its first result stored."""
    job = store.create(queued_job())
    store.claim(job.id, 1, NOW)
    run = RunClaim(job.id, 1, NOW)
    store.record_video(run, INFO, frames_total=5)
    store.append_frame(run, frame(0))
    return job, run


def test_a_released_run_is_queued_again_in_its_attempt_without_its_results(store: JobStore) -> None:
    job, run = running_with_a_result(store)

    assert store.release(run, NOW + 1)

    released = store.get(job.id)
    assert (released.state, released.attempt, released.frames_done, released.video_info) == (
        JobState.QUEUED, 1, 0, None)
    assert store.frames_after(job.id, None, 10) == []
    assert not store.release(run, NOW + 2), "no longer running"
    assert not store.append_frame(run, frame(2)), "nothing writes to a queued job"
    assert store.claim(job.id, 1, NOW + 3) is not None, "the next worker claims the same attempt"
    assert not store.release(RunClaim(job.id, 2, NOW + 3), NOW + 4), "only the attempt that runs"
    assert not store.append_frame(run, frame(2)), "nor the run before it, of the same attempt"
    store.cancel(job.id, NOW + 5, NOW + 60)
    assert not store.release(RunClaim(job.id, 1, NOW + 3), NOW + 6), "a cancelled job stays cancelled"
    assert store.get(job.id).state is JobState.CANCELLED


def test_a_run_queued_in_the_next_attempt_leaves_no_results_and_no_write_to_the_failed_one(store: JobStore) -> None:
    job, run = running_with_a_result(store)
    revision = store.get(job.id).revision

    assert store.queue_next_attempt(run, NOW + 1)

    queued = store.get(job.id)
    assert (queued.state, queued.attempt, queued.frames_done, queued.frames_total, queued.video_info) == (
        JobState.QUEUED, 2, 0, 0, None)
    assert queued.revision > revision, "a watcher sees the change"
    assert store.frames_after(job.id, None, 10) == []
    assert not store.queue_next_attempt(run, NOW + 2), "no longer running"
    assert not store.append_frame(run, frame(1)), "the failed run writes nothing more"
    assert store.claim(job.id, 1, NOW + 3) is None, "nor is its attempt claimed again"
    claimed = store.claim(job.id, 2, NOW + 3)
    assert claimed is not None and claimed.state is JobState.RUNNING
    store.cancel(job.id, NOW + 4, NOW + 60)
    assert not store.queue_next_attempt(RunClaim(job.id, 2, NOW + 3), NOW + 5), "a cancelled job stays cancelled"
    assert (store.get(job.id).state, store.get(job.id).attempt) == (JobState.CANCELLED, 2)


def test_redis_a_job_queued_in_its_next_attempt_awaits_a_hand_over_done_by_maintenance_or_a_worker(
    redis_server: RedisServer,
) -> None:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix=uuid.uuid4().hex, dispatch_grace_seconds=0.0, lease_seconds=1.0)
    try:
        job = store.create(queued_job())
        claimed = store.claim(job.id, 1, time.time())
        assert claimed is not None and not store.awaits_hand_over(job.id)
        assert store.queue_next_attempt(RunClaim.of(claimed), time.time())
        assert store.awaits_hand_over(job.id)
        # Its lease is gone with its run: a late recovery takes nothing for a vanished run.
        recovered = store.recover(time.time() + 5, max_attempts=3, expire_at=time.time() + 60)
        assert [(j.id, j.state, j.attempt) for j in recovered] == [(job.id, JobState.QUEUED, 2)]
    finally:
        store.close()


def test_redis_hands_a_released_job_to_a_worker_again_at_the_next_maintenance(redis_server: RedisServer) -> None:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisJobStore(connection, key_prefix=uuid.uuid4().hex, dispatch_grace_seconds=0.0)
    try:
        job = store.create(queued_job())
        claimed = store.claim(job.id, 1, time.time())
        assert claimed is not None
        assert store.release(RunClaim.of(claimed), time.time())
        recovered = store.recover(time.time() + 1, max_attempts=3, expire_at=time.time() + 60)
        assert [(j.id, j.state, j.attempt) for j in recovered] == [(job.id, JobState.QUEUED, 1)]
    finally:
        store.close()


def test_redis_a_failover_that_unblocks_a_watch_is_a_change_not_an_error(redis_server: RedisServer) -> None:
    """Turned into a replica, Redis ends a blocked XREAD with "UNBLOCKED ...": the watcher looks again."""
    store = RedisJobStore(redis.Redis.from_url(redis_server.url, decode_responses=True), key_prefix=uuid.uuid4().hex)
    job = store.create(queued_job())
    errors: list[Exception] = []
    watched = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                store.wait_for_change(job.id, store.get(job.id).revision, None, 0.25)
            except Exception as error:  # the test reports whatever escaped
                errors.append(error)
                return
            watched.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert watched.wait(5)
        for _ in range(3):  # each time with the read most likely blocked
            redis_server.client.replicaof("127.0.0.1", "1")
            time.sleep(0.1)
            redis_server.client.replicaof("NO", "ONE")
            time.sleep(0.1)
    finally:
        stop.set()
        watcher.join(10)
        redis_server.client.replicaof("NO", "ONE")
        store.close()
    assert errors == [], [f"{type(e).__module__}.{type(e).__name__}: {e}" for e in errors]
