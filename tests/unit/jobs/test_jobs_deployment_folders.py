"""The deployment's folders, named by its replicas to its Redis, and the workers that take them
from there rather than from the task, checked against a real redis-server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from fakes.redis_server import RedisServer
from videodag_service.jobs import Job, JobState, StoredVideo, rq_task
from videodag_service.jobs.deployment_folders import DeploymentFolderRecord, DeploymentFolders
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.redis_store import RedisJobStore
from videodag_service.jobs.rq_task import WorkerConfig
from videodag_service.video import SamplingOptions

_PREFIX = "folders-test"
_VIDEO = "queued.mp4"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def record(redis_server: RedisServer) -> Iterator[DeploymentFolderRecord]:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield DeploymentFolderRecord(connection, _PREFIX)
    connection.close()


def _folders(root: Path) -> DeploymentFolders:
    """A deployment's folders under `root`, its upload folder holding the queued job's video."""
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / _VIDEO).write_bytes(b"a video")
    return DeploymentFolders(str(root / "uploads"), str(root / "pipelines"))


def test_workers_find_the_folders_a_replica_named_to_the_redis_now_running(record: DeploymentFolderRecord) -> None:
    assert record.current() is None, "no replica has named any"
    record.name(DeploymentFolders("/deployment/uploads", None))
    assert record.current() == DeploymentFolders("/deployment/uploads", None)
    record.name(DeploymentFolders("/deployment/uploads", "/deployment/pipelines"))
    assert record.current() == DeploymentFolders("/deployment/uploads", "/deployment/pipelines")


def test_folders_named_before_redis_came_back_from_a_snapshot_count_for_nothing_until_named_again(
    redis_server: RedisServer, record: DeploymentFolderRecord
) -> None:
    """A backup restored (here: the same Redis crashed back to its snapshot) holds the folders of
    the deployment it was taken from: until one of the restored deployment's own replicas names
    its folders, a worker must not take those for its own."""
    record.name(DeploymentFolders("/live/uploads", None))
    redis_server.save_snapshot()
    redis_server.crash_to_snapshot()
    assert redis_server.client.get(f"{_PREFIX}:folders") is not None, "the snapshot holds the old name"
    assert record.current() is None
    record.name(DeploymentFolders("/restored/uploads", None))
    assert record.current() == DeploymentFolders("/restored/uploads", None)


def test_a_replica_told_other_folders_than_another_says_so_once(
    record: DeploymentFolderRecord, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    other = DeploymentFolderRecord(redis.Redis.from_url(redis_server.url, decode_responses=True), _PREFIX)
    with caplog.at_level(logging.WARNING, logger="videodag_service.jobs.deployment_folders"):
        for _ in range(3):  # each replica's maintenance, in turn
            record.name(DeploymentFolders("/one/uploads", None))
            other.name(DeploymentFolders("/two/uploads", None))
    warnings = [entry.getMessage() for entry in caplog.records]
    assert len(warnings) == 2, warnings  # each replica once
    assert ("names other folders for its workers: uploads /one/uploads and pipelines built in, where this one's "
            "are uploads /two/uploads and pipelines built in") in warnings[0]
    assert "give every replica the same --data-dir and --pipeline-dir" in warnings[1]
    caplog.clear()
    record.name(DeploymentFolders("/two/uploads", None))  # agreeing now: nothing said
    assert caplog.records == []


def _unrunnable_job(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> tuple[RedisJobStore, Job]:
    """A queued job of a worker whose decoders cannot start: its run fails at once, deleting the
    job's video from the upload folder the run was given, which tells which folder that was."""
    store = RedisJobStore(redis.Redis.from_url(redis_server.url, decode_responses=True), key_prefix=_PREFIX)
    job = store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                           StoredVideo(_VIDEO, 7, "0" * 64), 0.0))

    def decoders_that_cannot_start(*args: object, **kwargs: object) -> None:
        raise RuntimeError("decoder processes cannot start")

    monkeypatch.setattr(rq_task, "VideoFilePipelineService", decoders_that_cannot_start)
    monkeypatch.setattr(rq_task.rq, "get_current_job",
                        lambda: SimpleNamespace(connection=redis.Redis.from_url(redis_server.url)))
    return store, job


def _task(queued_by: DeploymentFolders, *, folders_from_deployment: bool) -> dict[str, object]:
    return WorkerConfig(key_prefix=_PREFIX, upload_dir=queued_by.upload_dir, pipeline_dir=None,
                        job_timeout_seconds=60, retention_seconds=60, lease_seconds=30, video_limits={},
                        folders_from_deployment=folders_from_deployment).to_json()


def test_a_worker_waits_for_the_restored_deployments_folders_and_never_touches_the_live_ones(
    redis_server: RedisServer, record: DeploymentFolderRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task names the live deployment's folders (it was queued there, then Redis backed up
    and restored elsewhere, a new Redis process): the worker waits until the restored
    deployment's replica names its own, and uses those, leaving the live deployment's video."""
    live, restored = _folders(tmp_path / "live"), _folders(tmp_path / "restored")
    record.name(live)
    redis_server.save_snapshot()
    redis_server.crash_to_snapshot()
    store, job = _unrunnable_job(redis_server, monkeypatch)
    ended: list[str | None] = []
    worker = threading.Thread(target=lambda: ended.append(rq_task.run_job(
        job.id, 1, _task(live, folders_from_deployment=True))))
    worker.start()
    time.sleep(1.5)
    assert worker.is_alive() and store.get(job.id).state is JobState.QUEUED, "waiting, the job not claimed"
    record.name(restored)  # the restored deployment's replica starts
    worker.join(30)
    assert ended == ["FAILED"]
    assert (Path(live.upload_dir) / _VIDEO).exists(), "the live deployment's video is left alone"
    assert not (Path(restored.upload_dir) / _VIDEO).exists(), "the failed job's video went from its own folder"
    store.close()


def test_a_task_queued_by_an_earlier_release_runs_with_its_own_folders_at_once(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas of an earlier release name no folders to Redis: their tasks' folders are used, as
    before, rather than waiting for a name that never comes during a rolling upgrade."""
    queued_by = _folders(tmp_path / "earlier")
    store, job = _unrunnable_job(redis_server, monkeypatch)
    assert rq_task.run_job(job.id, 1, _task(queued_by, folders_from_deployment=False)) == "FAILED"
    assert not (Path(queued_by.upload_dir) / _VIDEO).exists()
    store.close()
