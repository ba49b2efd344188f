"""Job records written by a later release of the server, as a rolling upgrade or a rollback
leaves them in a shared store: read as far as this release knows them, never refused whole."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fakes.fake_plugins import counter_pipeline, dag_with_test_pipelines
from fakes.media import write_indexed_video
from videodag_service.jobs import DirectoryUploadStorage, Job, JobState, JobSummary, SqliteJobStore, StoredVideo
from videodag_service.jobs.execution import JobExecutor
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import RunClaim
from videodag_service.jobs.sqlite_store import JobStoreFromLaterRelease
from videodag_service.video import SamplingOptions, VideoFilePipelineService, VideoInfo

DATABASE = "jobs.sqlite3"


def _with_a_later_field(text: str, **fields: object) -> str:
    return json.dumps({**json.loads(text), **fields})


def _set_column(data: Path, job_id: str, column: str, text: str) -> None:
    with sqlite3.connect(data / DATABASE) as database:
        database.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (text, job_id))


def test_a_job_a_later_release_finished_is_read_with_the_fields_this_one_knows(tmp_path: Path) -> None:
    """Read strictly, a summary field a later release added made GetJob, WatchJob and ListJobs
    fail INTERNAL ("unexpected keyword argument") for every job that release had finished."""
    data = tmp_path / "data"
    store = SqliteJobStore(data)
    stored = StoredVideo("v.avi", 1, "0" * 64)
    job = store.create(Job(new_job_id(), JobState.QUEUED, "p", SamplingOptions(), stored, 0.0))
    store.claim(job.id, 1, 0.0)
    store.record_video(RunClaim(job.id, 1, 0.0), VideoInfo(25.0, 10, 64, 48, 0.4, "MJPG", 1), 10)
    store.finish(RunClaim(job.id, 1, 0.0), 1.0, 100.0, summary=JobSummary("p", "1", 0, 0, 0.5, 0.25))
    row = sqlite3.connect(data / DATABASE).execute("SELECT summary, video_info FROM jobs").fetchone()
    store.close()
    summary = json.loads(row[0])
    summary["node_timings"] = [{"node_id": "n", "plugin": "x", "calls": 1, "total_seconds": 0.1, "errors": 0,
                                "p99_seconds": 0.2}]
    _set_column(data, job.id, "summary", json.dumps({**summary, "frames_dropped": 3}))
    _set_column(data, job.id, "video_info", _with_a_later_field(row[1], color_space="bt709"))
    _set_column(data, job.id, "sampling", json.dumps({"frame_stride": 1, "keyframes_only": False, "pixel_format": "",
                                                      "regions": [], "crop": None}))

    store = SqliteJobStore(data)
    try:
        read = store.get(job.id)
        assert read.state is JobState.SUCCEEDED and read.summary is not None
        assert read.summary.frames_processed == 0 and read.summary.node_timings[0].calls == 1
        assert read.video_info is not None and read.video_info.frame_count == 10
        assert read.unknown_sampling == (), "an option at its unset value changes nothing"
        assert [listed.id for listed in store.list_jobs(10, None, ()).jobs] == [job.id]
    finally:
        store.close()


def test_a_job_asking_for_sampling_this_release_does_not_know_is_shown_but_not_run(tmp_path: Path) -> None:
    """Run without the option, it would not be the run asked for."""
    (tmp_path / "pipelines").mkdir()
    dag = dag_with_test_pipelines(tmp_path / "pipelines", {"paced.yaml": counter_pipeline("paced")})
    clip = write_indexed_video(tmp_path / "clip.avi", 5, fps=25.0)
    data = tmp_path / "data"
    store = SqliteJobStore(data)
    uploads = DirectoryUploadStorage(data / "uploads")
    job_id = new_job_id()
    video = uploads.store(lambda: job_id, iter([clip.read_bytes()]), max_upload_bytes=10**7, declared_size=None,
                          declared_sha256=None, file_name=clip.name)
    store.create(Job(job_id, JobState.QUEUED, "paced", SamplingOptions(frame_stride=2), video, 0.0))
    _set_column(data, job_id, "sampling", json.dumps({"frame_stride": 2, "keyframes_only": True}))
    executor = JobExecutor(store, uploads, dag, VideoFilePipelineService(dag), job_timeout_seconds=60,
                           retention_seconds=60)
    try:
        assert store.get(job_id).unknown_sampling == (("keyframes_only", True),)
        assert store.get(job_id).sampling == SamplingOptions(frame_stride=2)
        assert executor.execute(job_id, 1) is JobState.FAILED
        failed = store.get(job_id)
        assert failed.error is not None and failed.error.status_code == "INTERNAL"
        assert "sampling options this release of the server does not know (keyframes_only=True)" in failed.error.message
        assert store.frames_after(job_id, None, 10) == []
    finally:
        store.close()


def test_a_database_a_later_release_laid_out_is_refused_at_start_and_left_as_it_was(tmp_path: Path) -> None:
    """Its version was written and never read: a later layout was opened and stamped back to 1."""
    data = tmp_path / "data"
    SqliteJobStore(data).close()
    with sqlite3.connect(data / DATABASE) as database:
        database.execute("PRAGMA user_version=7")

    with pytest.raises(JobStoreFromLaterRelease, match=r"laid out by a later release of the server \(schema "
                                                        r"version 7; this release reads version 1 and before\)"):
        SqliteJobStore(data)
    assert sqlite3.connect(data / DATABASE).execute("PRAGMA user_version").fetchone()[0] == 7


def test_a_refused_database_in_rollback_journal_mode_is_not_switched_to_wal(tmp_path: Path) -> None:
    """A backup made with VACUUM INTO is in rollback-journal mode: the start set WAL mode, a write
    to the file's header, before it looked at the version."""
    data = tmp_path / "data"
    SqliteJobStore(data).close()
    with sqlite3.connect(data / DATABASE) as database:
        database.execute("PRAGMA journal_mode=DELETE")
        database.execute("PRAGMA user_version=7")
    before = (data / DATABASE).read_bytes()

    with pytest.raises(JobStoreFromLaterRelease):
        SqliteJobStore(data)
    assert (data / DATABASE).read_bytes() == before
    with sqlite3.connect(data / DATABASE) as database:
        database.execute("PRAGMA user_version=1")
    SqliteJobStore(data).close()  # the refusal left the lock free
