"""A job whose end the store cannot record for a while (a full data disk): one warning, not a
traceback at every maintenance.

The run is real (the executor, SQLite, a real video through frame_stats_v1); only the store's
`finish` is made to fail, with the DiskFull the SQLite store raises on a full disk, for as long
as the test says the disk is full.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import dag_with_test_pipelines
from fakes.media import write_indexed_video
from videodag_service.errors import DiskFull, ErrorDetails
from videodag_service.jobs import DirectoryUploadStorage, Job, JobExecutor, JobState, SqliteJobStore
from videodag_service.jobs.ids import new_job_id
from videodag_service.video import SamplingOptions, VideoFilePipelineService

EXECUTION_LOGGER = "videodag_service.jobs.execution"


class FullDiskStore(SqliteJobStore):
    """The SQLite store, unable to record a job's end while `disk_full` is set."""

    disk_full = True

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        if self.disk_full:
            raise DiskFull("no space left on the data directory's disk to store job data",
                           ErrorDetails(metadata={"store": "sqlite"}))
        return super().finish(*args, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FullDiskStore]:
    store = FullDiskStore(tmp_path / "data")
    yield store
    store.close()


def test_an_end_the_full_disk_keeps_unrecorded_is_one_warning_and_recorded_once_there_is_room(
    tmp_path: Path, store: FullDiskStore, caplog: pytest.LogCaptureFixture
) -> None:
    dag = dag_with_test_pipelines(tmp_path, {})
    uploads = DirectoryUploadStorage(tmp_path / "data" / "uploads")
    clip = write_indexed_video(tmp_path / "clip.avi", 10, fps=25.0)
    job_id = new_job_id()
    video = uploads.store(lambda: job_id, [clip.read_bytes()], max_upload_bytes=10**7, declared_size=None,
                          declared_sha256=None, file_name=clip.name)
    job = store.create(Job(job_id, JobState.QUEUED, "frame_stats_v1", SamplingOptions(), video, 0.0))
    executor = JobExecutor(store, uploads, dag, VideoFilePipelineService(dag), job_timeout_seconds=60,
                           retention_seconds=60)

    with caplog.at_level(logging.DEBUG, logger=EXECUTION_LOGGER):
        assert executor.execute(job.id, 1) is JobState.RUNNING  # its end waits for the store
        for _ in range(5):  # maintenance, every few seconds while the disk stays full
            executor.record_pending_ends()
        store.disk_full = False
        executor.record_pending_ends()
        executor.record_pending_ends()  # nothing left to record

    records = [record for record in caplog.records if record.name == EXECUTION_LOGGER]
    assert [record for record in records if record.exc_info] == []
    [warning] = [record for record in records if record.levelno >= logging.WARNING]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith(f"job {job.id}: could not record its end (DiskFull: no space left")
    assert [record.getMessage() for record in records if "recorded at last" in record.getMessage()] == [
        f"job {job.id}: its end is recorded at last"
    ]
    done = store.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.frames_done == 10
    assert list(uploads.refs()) == []  # its video went once the end was recorded
