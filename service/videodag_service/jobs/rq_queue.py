"""The scale-out `JobQueue`: hand jobs to RQ workers through Redis.

RQ job arguments are a job id, an attempt number and the `WorkerConfig`: references, never
video bytes or frames (the video is in the shared upload directory, the job in Redis).
`job_timeout` is always set: RQ's default of 180 s would kill any long video's run. RQ
itself keeps little: the return value for a minute, a failure for the retention time; the
job record and results live in the job store.

A task RQ has handed to a worker may end before its job was claimed (the worker killed, the
store out of reach at the claim): the job stays QUEUED, and `lost_hand_overs` tells the
store's recovery which of its unclaimed hand-overs RQ no longer holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis
import rq
import rq.defaults
from rq.serializers import JSONSerializer

from videodag_service.jobs.defaults import DEFAULT_QUEUE_NAME
from videodag_service.jobs.model import HandOver, Job
from videodag_service.jobs.rq_task import RUN_JOB, WorkerConfig

# The tasks RQ holds: waiting in the queue (KEYS[1]), or started (KEYS[3], the started registry)
# while the execution's key (ARGV[1] .. entry) lives; and, apart, those in its intermediate list
# (KEYS[2]), taken from the queue by a worker that has not yet recorded their start.
_HELD_TASKS = """
local held = redis.call('LRANGE', KEYS[1], 0, -1)
for _, entry in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. entry) == 1 then table.insert(held, entry) end
end
return {held, redis.call('LRANGE', KEYS[2], 0, -1)}
"""
# RQ's key of a started task's execution, "<prefix>:execution:<task id>:<execution id>", which
# expires unless its worker's heartbeats renew it (RQ 3 lets RQ_KEY_PREFIX change the prefix).
_EXECUTION_KEY_PREFIX = f"{getattr(rq.defaults, 'RQ_KEY_PREFIX', 'rq')}:execution:"

# A worker records a task's start within milliseconds of taking it from the queue (a few seconds
# after an outage, `VideodagWorker.prepare_execution`). One still taken and not started this long
# after it was first seen so was left by a worker that died or quit in between: RQ's own cleanup
# of its intermediate list fails it at a worker's maintenance pass (each worker runs one every
# 10 minutes) a minute or more after one that saw it, up to 20 minutes later.
_TAKEN_UNSTARTED_SECONDS = 30.0

# RQ's own timeout is a backstop for a plugin stuck inside one frame; the executor enforces
# the job timeout between frames and records DEADLINE_EXCEEDED itself, so RQ gets a margin.
_RQ_TIMEOUT_MARGIN_SECONDS = 60


class RqJobQueue:
    """Enqueues one RQ job per attempt of a videodag job, with a deterministic RQ job id."""

    def __init__(
        self,
        connection: redis.Redis,
        config: WorkerConfig,
        *,
        undispatched_key: str,
        handed_over_key: str,
        queue_name: str = DEFAULT_QUEUE_NAME,
        clock: Callable[[], float] = time.time,
        config_as_queued: dict[str, Any] | None = None,
    ) -> None:
        """`connection` must return bytes (RQ's requirement): not `decode_responses`. The keys are
        the store's sets of jobs not yet handed to RQ and of those handed over, not yet claimed,
        and `clock` the store's (`JobStore.clock`), by which its recovery judges hand-over times.
        `config_as_queued`: what the tasks carry instead of `config`, for a worker handing a job
        over again with the settings its server gave, whether the worker knows them or not."""
        self._connection = connection
        self._config = config
        self._config_json = config.to_json() if config_as_queued is None else config_as_queued
        self._clock = clock
        self._undispatched_key = undispatched_key
        self._handed_over_key = handed_over_key
        self._queue = rq.Queue(queue_name, connection=connection, serializer=JSONSerializer)
        self._held_tasks = connection.register_script(_HELD_TASKS)
        self._taken_unstarted_since: dict[str, float] = {}  # task id -> when first seen so, by `clock`

    def dispatch(self, job: Job) -> None:
        # Enqueued and marked handed-over in one transaction: either both happen or
        # maintenance finds the job still undispatched and tries again.
        task_id = _task_id(job.id, job.attempt)
        with self._connection.pipeline() as pipe:
            self._queue.enqueue(
                RUN_JOB,
                job.id,
                job.attempt,
                self._config_json,
                job_id=task_id,
                description=f"videodag job {job.id} attempt {job.attempt} ({job.pipeline_id})",
                job_timeout=int(self._config.job_timeout_seconds) + _RQ_TIMEOUT_MARGIN_SECONDS,
                result_ttl=60,
                failure_ttl=max(60, int(self._config.retention_seconds)),
                pipeline=pipe,
            )
            # A job queued again in the same attempt (its run released it) gets its task's id again:
            # RQ rewrites the ended task's record, keeping the minute it had left to live, and a
            # task whose record expires before a worker takes it is dropped from the queue.
            pipe.persist(rq.job.Job.key_for(task_id))
            pipe.zrem(self._undispatched_key, job.id)
            pipe.zadd(self._handed_over_key, {job.id: self._clock()})
            pipe.execute()

    def lost_hand_overs(self, hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        """The hand-overs whose task RQ no longer holds: not waiting in the queue, not being taken
        from it, not run by a worker whose heartbeats go on. It failed or was stopped before its
        claim, or its worker died (kill -9, a crash) before it: RQ keeps such a task STARTED until
        its heartbeat's time runs out (a minute past the worker's --job-monitoring-interval).

        The three places are read in one script, atomically: a task moving from one to the next
        between two reads would be seen in neither, and its job run twice. A task taken from the
        queue sits in RQ's intermediate list until its worker records its start, at once; one
        found there unstarted `_TAKEN_UNSTARTED_SECONDS` after this queue first saw it so is
        lost (its worker died or quit in between). A started task is held while its execution's
        key lives: its worker's heartbeats renew the key's expiry, which Redis times, where the
        started registry's scores are deadlines by the worker's own clock (a worker whose clock
        is minutes behind would have every task it runs taken for lost).
        """
        held_entries, taken_entries = self._held_tasks(
            keys=[self._queue.key, self._queue.intermediate_queue_key, self._queue.started_job_registry.key],
            args=[_EXECUTION_KEY_PREFIX],
        )
        # A started task's entry is "<task id>:<execution id>"; task ids here have no colon.
        held = {_text(entry).split(":", 1)[0] for entry in held_entries}
        now = self._clock()
        self._taken_unstarted_since = {
            task: self._taken_unstarted_since.get(task, now) for task in map(_text, taken_entries) if task not in held
        }
        held.update(task for task, since in self._taken_unstarted_since.items()
                    if now - since < _TAKEN_UNSTARTED_SECONDS)
        return [hand_over for hand_over in hand_overs if _task_id(hand_over.job_id, hand_over.attempt) not in held]

    def depth(self) -> int:
        return int(self._queue.count)

    def retry_stranded(self) -> None:
        """Nothing here: a job a worker could not finish keeps a lease that expires, and one a
        worker took but never claimed is among `lost_hand_overs`: the store's recovery queues
        either again (`RedisJobStore.recover`)."""

    def stop_taking(self) -> None:
        """Nothing to stop here: RQ's worker processes run the jobs, and have their own lifecycle."""

    def wait_until_idle(self, timeout: float) -> bool:
        """No job runs in this process: RQ's workers run them."""
        return True

    def close(self) -> None:
        self._connection.close()


def _task_id(job_id: str, attempt: int) -> str:
    """The RQ job id of a job's attempt: one RQ job per attempt."""
    return f"videodag-{job_id}-{attempt}"


def _text(entry: bytes | str) -> str:
    return entry.decode() if isinstance(entry, bytes) else entry
