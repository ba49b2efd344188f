"""The default of every job setting, written once.

`JobConfig`, the stores, `JobService` and the RQ queue take their defaults from here, and so
should the server's `Settings`, whose flags set most of them: one value per setting, whoever
builds the job backend.
"""

from __future__ import annotations

from videodag_service.disk_space import MIB

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_WORKERS = 2
"""Embedded backend: jobs run at once in the server."""
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
DEFAULT_JOB_TIMEOUT_SECONDS = 6 * 3600.0
DEFAULT_MIN_FREE_BYTES = 64 * MIB
"""Room uploads leave on the data directory's disk (`--job-min-free-bytes`)."""
DEFAULT_MAX_QUEUED_JOBS = 1000
"""Jobs waiting for a worker past which SubmitJob refuses new ones (`--max-queued-jobs`); 0: no cap."""
DEFAULT_MAX_ATTEMPTS = 3
"""Runs an interrupted job gets before it is FAILED."""
DEFAULT_LEASE_SECONDS = 30.0
"""Redis backend: how long a silent worker keeps its job."""
DEFAULT_KEY_PREFIX = "videodag"
"""Redis backend: the prefix of every key."""
DEFAULT_QUEUE_NAME = "videodag-jobs"
"""Redis backend: the RQ queue workers listen on."""
MAX_MAINTENANCE_INTERVAL_SECONDS = 10.0
"""The longest time between two maintenance passes (retention, recovery) a server uses."""
