"""Jobs: long videos run in the background, watched and resumed by frame index.

A job is an uploaded video, a pipeline and sampling options, run by a worker while the
client is away. Two backends sit behind the same `JobService`:

* embedded (default): SQLite (WAL) and the uploads under a data directory, a bounded pool of
  worker threads in the server. After a restart, QUEUED jobs run and RUNNING jobs run again
  from the start, their partial results discarded, so each frame result is stored once.
* Redis + RQ: job records, progress and per-job result streams in Redis shared by server
  replicas; RQ workers anywhere run the jobs from a shared upload directory. A job whose
  worker stopped renewing its lease runs again from the start on another worker.

The public surface: `open_job_service(JobConfig, dag)` -> `JobService`; the values `Job`,
`JobState`, `JobRequest`, `JobFrame`, `JobPage`, `JobSummary`, `JobError`; the interfaces
`JobStore`, `JobQueue`, `UploadStorage`. No module here imports gRPC or generated code.
"""

from videodag_service.jobs.backends import DataDirectoryFull, JobBackend, JobConfig, open_job_service
from videodag_service.jobs.data_dir_lock import DataDirectoryInUse
from videodag_service.jobs.dispatch import JobQueue, ThreadPoolJobQueue
from videodag_service.jobs.execution import JobExecutor
from videodag_service.jobs.model import (
    Job,
    JobError,
    JobFrame,
    JobPage,
    JobRequest,
    JobState,
    JobSummary,
    NodeTimingRecord,
    StoredVideo,
    WatchEvent,
)
from videodag_service.jobs.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, JobService, listing_violations
from videodag_service.jobs.sqlite_store import SqliteJobStore
from videodag_service.jobs.store import JobStore
from videodag_service.jobs.uploads import DirectoryUploadStorage, UploadStorage

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "DataDirectoryFull",
    "DataDirectoryInUse",
    "DirectoryUploadStorage",
    "Job",
    "JobBackend",
    "JobConfig",
    "JobError",
    "JobExecutor",
    "JobFrame",
    "JobPage",
    "JobQueue",
    "JobRequest",
    "JobService",
    "JobState",
    "JobStore",
    "JobSummary",
    "NodeTimingRecord",
    "SqliteJobStore",
    "StoredVideo",
    "ThreadPoolJobQueue",
    "UploadStorage",
    "WatchEvent",
    "listing_violations",
    "open_job_service",
]
