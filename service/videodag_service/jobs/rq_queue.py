"""The scale-out `JobQueue`: hand jobs to RQ workers through Redis.

RQ job arguments are a job id, an attempt number and the `WorkerConfig`: references, never
video bytes or frames (the video is in the shared upload directory, the job in Redis).
`job_timeout` is always set: RQ's default of 180 s would kill any long video's run. RQ
itself keeps little: the return value for a minute, a failure for the retention time; the
job record and results live in the job store.
"""

from __future__ import annotations

import redis
import rq
from rq.serializers import JSONSerializer

from videodag_service.jobs.defaults import DEFAULT_QUEUE_NAME
from videodag_service.jobs.model import Job
from videodag_service.jobs.rq_task import RUN_JOB, WorkerConfig

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
        queue_name: str = DEFAULT_QUEUE_NAME,
    ) -> None:
        """`connection` must return bytes (RQ's requirement): not `decode_responses`."""
        self._connection = connection
        self._config = config
        self._undispatched_key = undispatched_key
        self._queue = rq.Queue(queue_name, connection=connection, serializer=JSONSerializer)

    def dispatch(self, job: Job) -> None:
        # Enqueued and marked handed-over in one transaction: either both happen or
        # maintenance finds the job still undispatched and tries again.
        with self._connection.pipeline() as pipe:
            self._queue.enqueue(
                RUN_JOB,
                job.id,
                job.attempt,
                self._config.to_json(),
                job_id=f"videodag-{job.id}-{job.attempt}",
                description=f"videodag job {job.id} attempt {job.attempt} ({job.pipeline_id})",
                job_timeout=int(self._config.job_timeout_seconds) + _RQ_TIMEOUT_MARGIN_SECONDS,
                result_ttl=60,
                failure_ttl=max(60, int(self._config.retention_seconds)),
                pipeline=pipe,
            )
            pipe.zrem(self._undispatched_key, job.id)
            pipe.execute()

    def depth(self) -> int:
        return int(self._queue.count)

    def retry_stranded(self) -> None:
        """Nothing here: a job a worker could not finish keeps a lease that expires, and the
        store's recovery queues it again (`RedisJobStore.recover`)."""

    def stop_taking(self) -> None:
        """Nothing to stop here: RQ's worker processes run the jobs, and have their own lifecycle."""

    def wait_until_idle(self, timeout: float) -> bool:
        """No job runs in this process: RQ's workers run them."""
        return True

    def close(self) -> None:
        self._connection.close()
