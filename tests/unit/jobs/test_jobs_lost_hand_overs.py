"""A job handed to RQ whose task ends unclaimed (its worker killed, the store out of reach at the
claim) is handed over again by recovery, against a real redis-server and RQ's own bookkeeping.

A worker's progress through a task is played here on RQ's keys: waiting in the queue, taken
into the intermediate list, started (in the started registry, with an execution key its
heartbeats keep alive).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import pytest
import redis
import rq
from rq.serializers import JSONSerializer

from fakes.redis_server import RedisServer
from videodag_service.jobs import Job, JobState, StoredVideo
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import HandOver
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.rq_queue import RqJobQueue
from videodag_service.jobs.rq_task import WorkerConfig
from videodag_service.jobs.store import LostHandOvers
from videodag_service.video import SamplingOptions

MAX_ATTEMPTS = 3


@dataclass
class Backend:
    store: RedisJobStore
    queue: RqJobQueue
    rq_connection: redis.Redis

    def submit(self) -> Job:
        """Stored and handed to RQ, as SubmitJob does."""
        job = self.store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                                    StoredVideo("v.mp4", 1, "0" * 64), time.time()))
        self.queue.dispatch(job)
        return job

    def recover(self, lost_hand_overs: LostHandOvers | None = None) -> list[Job]:
        """Recovery past the grace, asking the queue unless told otherwise."""
        now = time.time() + 1
        return self.store.recover(now, MAX_ATTEMPTS, now + 60, lost_hand_overs or self.queue.lost_hand_overs)

    def task_id(self, job: Job) -> str:
        return f"videodag-{job.id}-{job.attempt}"

    def take(self, job: Job) -> None:
        """A worker takes the task from the queue, as RQ's BLMOVE does."""
        key = self.queue._queue.key
        assert self.rq_connection.lrem(key, 1, self.task_id(job)) == 1
        self.rq_connection.rpush(self.queue._queue.intermediate_queue_key, self.task_id(job))

    def start(self, job: Job, heartbeat_seconds: float, worker_clock_offset: float = 0.0,
              horse_started: bool = True) -> None:
        """Its worker records its start: in the started registry, with an execution whose key
        lives `heartbeat_seconds` more (none left: its worker died that long ago), as RQ keeps
        them; the registry's score is the same deadline by the worker's clock, `worker_clock_offset`
        off. Then its work horse takes it out of the intermediate list, unless not `horse_started`."""
        if horse_started:
            self.rq_connection.lrem(self.queue._queue.intermediate_queue_key, 1, self.task_id(job))
        registry = self.queue._queue.started_job_registry
        entry = f"{self.task_id(job)}:{uuid.uuid4().hex}"
        self.rq_connection.zadd(registry.key, {entry: time.time() + worker_clock_offset + heartbeat_seconds})
        if heartbeat_seconds > 0:
            self.rq_connection.hset(f"rq:execution:{entry}", mapping={"job_id": self.task_id(job)})
            self.rq_connection.expire(f"rq:execution:{entry}", round(heartbeat_seconds))

    def end_unclaimed(self, job: Job) -> None:
        """The task ends (failed, stopped) without its job claimed."""
        registry = self.queue._queue.started_job_registry
        for entry in cast(list[bytes], self.rq_connection.zrange(registry.key, 0, -1)):
            if entry.decode().startswith(self.task_id(job) + ":"):
                self.rq_connection.zrem(registry.key, entry)


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[Backend]:
    prefix = uuid.uuid4().hex
    store = RedisJobStore(redis.Redis.from_url(redis_server.url, decode_responses=True), key_prefix=prefix,
                          dispatch_grace_seconds=0.0)
    rq_connection = redis.Redis.from_url(redis_server.url)
    config = WorkerConfig(key_prefix=prefix, upload_dir="/nowhere", pipeline_dir=None, job_timeout_seconds=60,
                          retention_seconds=60, lease_seconds=30, video_limits={})
    queue = RqJobQueue(redis.Redis.from_url(redis_server.url), config, undispatched_key=store.undispatched_key,
                       handed_over_key=store.handed_over_key, queue_name=f"videodag-test-{prefix}")
    yield Backend(store, queue, rq_connection)
    store.close()
    queue.close()
    rq_connection.close()


def test_hand_overs_rq_still_holds_are_left_alone(backend: Backend) -> None:
    """Waiting in the queue (for hours, behind long jobs), taken by a worker, or started by one
    whose heartbeats go on: the task will claim its job."""
    waiting, taken, started = backend.submit(), backend.submit(), backend.submit()
    backend.take(taken)
    backend.take(started)
    backend.start(started, heartbeat_seconds=60)

    assert backend.recover() == []
    for job in (waiting, taken, started):
        assert (backend.store.get(job.id).state, backend.store.get(job.id).attempt) == (JobState.QUEUED, 1)


def test_a_task_started_by_a_worker_whose_clock_is_minutes_behind_is_held(backend: Backend) -> None:
    """RQ scores a started task with its heartbeat's deadline by the worker's clock: two minutes
    behind, every task the worker started looked lost to the replica's clock, and its job ran
    again (a backlog of jobs waiting past the hand-over grace ran two or three times)."""
    job = backend.submit()
    backend.take(job)
    backend.start(job, heartbeat_seconds=90, worker_clock_offset=-120)

    assert backend.recover() == []
    assert (backend.store.get(job.id).state, backend.store.get(job.id).attempt) == (JobState.QUEUED, 1)


def test_a_task_taken_and_never_started_is_lost_once_it_has_stayed_so_half_a_minute(backend: Backend) -> None:
    """Its worker quit between taking the task from the queue and recording its start (a Redis
    outage then ended RQ's worker): the task stayed in RQ's intermediate list, held, until RQ's
    own cleanup, two of its 10-minute maintenance passes later; the job stayed QUEUED all along.
    A task taken and started is held however long its run lasts."""
    clock = [time.time()]
    backend.queue._clock = lambda: clock[0]
    stranded, running = backend.submit(), backend.submit()
    backend.take(stranded)
    backend.take(running)
    backend.start(running, heartbeat_seconds=600, horse_started=False)  # a horse slow to start

    assert backend.recover() == [], "just taken: its worker records its start at once"
    clock[0] += 29
    assert backend.recover() == []
    clock[0] += 2
    recovered = backend.recover()

    assert [(found.id, found.state, found.attempt) for found in recovered] == [(stranded.id, JobState.QUEUED, 2)]
    assert (backend.store.get(running.id).state, backend.store.get(running.id).attempt) == (JobState.QUEUED, 1)


@pytest.mark.parametrize("how", ["worker killed", "task ended unclaimed", "task gone"])
def test_a_hand_over_rq_lost_is_made_again_in_the_next_attempt(backend: Backend, how: str) -> None:
    """The job stayed QUEUED for good, with no lease for recovery to find: its watches waited
    forever and its video was never removed."""
    job = backend.submit()
    if how == "worker killed":  # started, then no heartbeat: RQ keeps it STARTED until the deadline passes
        backend.take(job)
        backend.start(job, heartbeat_seconds=-1)
    elif how == "task ended unclaimed":
        backend.take(job)
        backend.start(job, heartbeat_seconds=60)
        backend.end_unclaimed(job)
    else:
        backend.rq_connection.delete(backend.queue._queue.key)

    recovered = backend.recover()

    assert [(found.id, found.state, found.attempt) for found in recovered] == [(job.id, JobState.QUEUED, 2)]
    assert backend.store.claim(job.id, 1, time.time()) is None, "the lost task's attempt can no longer start"
    backend.queue.dispatch(recovered[0])
    assert backend.recover() == [], "the new attempt's task is waiting"
    assert backend.store.claim(job.id, 2, time.time()) is not None


def test_a_job_whose_hand_over_is_lost_every_time_is_given_up_after_its_attempts(backend: Backend) -> None:
    """A job that kills each worker taking it (before its claim) must end, not loop."""
    job = backend.submit()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        current = backend.store.get(job.id)
        assert (current.state, current.attempt) == (JobState.QUEUED, attempt)
        backend.take(current)
        backend.start(current, heartbeat_seconds=-1)
        (recovered,) = backend.recover()
        if recovered.state is JobState.QUEUED:
            backend.queue.dispatch(recovered)

    assert recovered.state is JobState.FAILED and recovered.attempt == MAX_ATTEMPTS
    assert recovered.error is not None and (recovered.error.status_code, recovered.error.reason) == (
        "INTERNAL", "JOB_INTERRUPTED")
    assert recovered.expire_at is not None
    assert backend.recover() == [], "given up once"


def test_a_job_claimed_or_cancelled_while_recovery_looks_is_left_alone(backend: Backend) -> None:
    """Recovery reads the store, then RQ: a worker may claim the job in between, its task then
    ending before RQ is read; a cancel may come too."""
    claimed, cancelled = backend.submit(), backend.submit()

    def claim_and_cancel_first(hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        assert backend.store.claim(claimed.id, 1, time.time()) is not None
        backend.store.cancel(cancelled.id, time.time(), time.time() + 60)
        return hand_overs  # their tasks are gone by now, as far as this look knows

    assert backend.recover(claim_and_cancel_first) == []
    assert (backend.store.get(claimed.id).state, backend.store.get(claimed.id).attempt) == (JobState.RUNNING, 1)
    assert backend.store.get(cancelled.id).state is JobState.CANCELLED


def test_a_hand_over_is_not_asked_about_before_its_grace(redis_server: RedisServer) -> None:
    store = RedisJobStore(redis.Redis.from_url(redis_server.url, decode_responses=True), key_prefix=uuid.uuid4().hex,
                          dispatch_grace_seconds=30.0)
    asked: list[Sequence[HandOver]] = []
    try:
        job = store.create(Job(new_job_id(), JobState.QUEUED, "p", SamplingOptions(), StoredVideo("v.mp4", 1, "0" * 64),
                               time.time()))
        store._redis.zrem(store.undispatched_key, job.id)
        store._redis.zadd(store.handed_over_key, {job.id: time.time()})

        def lost_hand_overs(hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
            asked.append(hand_overs)
            return hand_overs

        assert store.recover(time.time(), MAX_ATTEMPTS, time.time() + 60, lost_hand_overs) == []
        assert asked == []
        (recovered,) = store.recover(time.time() + 31, MAX_ATTEMPTS, time.time() + 60, lost_hand_overs)
        assert asked == [[HandOver(job.id, 1)]]
        assert (recovered.state, recovered.attempt) == (JobState.QUEUED, 2)
    finally:
        store.close()


def test_a_job_handed_over_again_in_its_attempt_keeps_its_task_until_a_worker_takes_it(backend: Backend) -> None:
    """Its run released it (results lost, Redis out of reach): the task gets the ended task's
    id again, and RQ had given that one's record a minute to live. Rewritten, the record kept
    it, and once it expired RQ dropped the task: the job ran again only as a lost hand-over, at
    the cost of an attempt (or was given up, in its last)."""
    job = backend.submit()
    task_key = f"rq:job:{backend.task_id(job)}"
    backend.rq_connection.expire(task_key, 60)  # as RQ does to a task that ended

    backend.queue.dispatch(backend.store.get(job.id))

    assert backend.rq_connection.ttl(task_key) == -1, "kept until its own run ends"


def test_a_task_handed_over_with_the_config_as_queued_carries_settings_its_worker_does_not_know(
    backend: Backend, redis_server: RedisServer
) -> None:
    """A worker handing a job over again passes on the server's settings whole: a worker of a
    later release taking it applies those this one ignored."""
    as_queued = {**backend.queue._config.to_json(), "a_later_setting": 7}
    queue = RqJobQueue(redis.Redis.from_url(redis_server.url), WorkerConfig.from_json(as_queued),
                       undispatched_key=backend.store.undispatched_key, handed_over_key=backend.store.handed_over_key,
                       queue_name=backend.queue._queue.name, config_as_queued=as_queued)
    job = backend.store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                                   StoredVideo("v.mp4", 1, "0" * 64), time.time()))
    try:
        queue.dispatch(job)
    finally:
        queue.close()

    task = rq.job.Job.fetch(backend.task_id(job), connection=backend.rq_connection, serializer=JSONSerializer)
    assert task.args == [job.id, 1, as_queued]
