"""The folders of a Redis deployment (uploads, pipelines), named by its replicas to its Redis for its workers.

A queued job's RQ task is a copy of what the replica that queued it knew, and a backup of Redis
holds those tasks: workers that took their folders from the task would use the folders of the
deployment the backup was taken from. A backup restored beside the live deployment had its
workers read, and delete, the live one's videos; one restored to other paths had its queued jobs
look for their videos where they were. So the replicas name their folders to the Redis they run
on (at every maintenance), and workers take them from there, once a replica has named them to
the Redis process now running: a name read from a backup, or from before a restart, was given to
another process (Redis's `run_id` changes with each start) and counts for nothing until a
replica names the folders again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis

logger = logging.getLogger(__name__)

# How often a worker looks again while no replica has named the folders to this Redis.
_LOOK_AGAIN_SECONDS = 0.5


@dataclass(frozen=True)
class DeploymentFolders:
    """Where a deployment's workers find its job videos and pipelines (absolute paths)."""

    upload_dir: str
    pipeline_dir: str | None
    """None: the built-in pipelines."""

    def __str__(self) -> str:
        return f"uploads {self.upload_dir} and pipelines {self.pipeline_dir or 'built in'}"


class DeploymentFolderRecord:
    """The deployment's folders as its replicas last named them, in one Redis key.

    `connection` must return str (`decode_responses=True`).
    """

    outage_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)

    def __init__(self, connection: redis.Redis, key_prefix: str) -> None:
        self._redis = connection
        self._key_prefix = key_prefix
        self._key = f"{key_prefix}:folders"
        self._conflicts_said: set[DeploymentFolders] = set()

    def name(self, folders: DeploymentFolders) -> None:
        """Name `folders` as this deployment's to the Redis process now running, warning of a
        replica that named others (replicas told different folders hand their workers each
        other's in turn)."""
        run_id = self._run_id()
        named = self._named(self._redis.get(self._key))
        if named is not None and named[1] == run_id and named[0] != folders and named[0] not in self._conflicts_said:
            self._conflicts_said.add(named[0])
            logger.warning("another replica of this deployment (key prefix %s) names other folders for its workers: "
                           "%s, where this one's are %s; give every replica the same --data-dir and --pipeline-dir",
                           self._key_prefix, named[0], folders)
        record = {"upload_dir": folders.upload_dir, "pipeline_dir": folders.pipeline_dir, "redis_run_id": run_id}
        self._redis.set(self._key, json.dumps(record))

    def current(self) -> DeploymentFolders | None:
        """The folders a replica named to the Redis process now running; None if none has yet."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.info("server")
            pipe.get(self._key)
            server, record = pipe.execute()
        named = self._named(record)
        return named[0] if named is not None and named[1] == server["run_id"] else None

    def wait_for_current(self, job_id: str) -> DeploymentFolders:
        """The current folders, waiting (through outages too) until a replica has named them.

        The wait is bounded by RQ's own time limit on the task: a job must not run with folders
        that may be another deployment's, and ending the task would count as a lost attempt.
        """
        said_at: float | None = None
        while True:
            try:
                if (folders := self.current()) is not None:
                    if said_at is not None:
                        logger.info("job %s: a replica named this deployment's folders after %.0f s: the job runs",
                                    job_id, time.monotonic() - said_at)
                    return folders
                why = "none of its replicas has named them to this Redis since it started"
            except self.outage_errors as error:
                why = f"its Redis cannot be reached ({type(error).__name__}: {error})"
            if said_at is None:
                said_at = time.monotonic()
                logger.warning("job %s waits for this deployment's upload and pipeline folders: %s (a Redis restarted, "
                               "or restored from a backup, before any replica started)", job_id, why)
            time.sleep(_LOOK_AGAIN_SECONDS)

    def _run_id(self) -> str:
        return str(self._redis.info("server")["run_id"])

    @staticmethod
    def _named(record: str | bytes | None) -> tuple[DeploymentFolders, str] | None:
        if record is None:
            return None
        fields = json.loads(record)
        return DeploymentFolders(fields["upload_dir"], fields["pipeline_dir"]), str(fields["redis_run_id"])
