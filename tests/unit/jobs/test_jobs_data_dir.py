"""The data directory on disk: who may read it, and what a crashed server left in it."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.redis_server import RedisServer
from videodag_service.dag import DagPipelineService, PluginRegistry, builtin_plugins, load_pipeline_folder
from videodag_service.jobs import (
    DataDirectoryInUse,
    JobBackend,
    JobConfig,
    JobRequest,
    JobService,
    SqliteJobStore,
    open_job_service,
)

HOUR = 3600.0


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> DagPipelineService:
    folder = tmp_path_factory.mktemp("pipelines")
    builtin = Path(__file__).resolve().parents[3] / "service" / "videodag_service" / "pipelines"
    (folder / "frame_stats_v1.yaml").write_text((builtin / "frame_stats_v1.yaml").read_text())
    return DagPipelineService(load_pipeline_folder(folder, PluginRegistry(builtin_plugins())))


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common default umask, under which a plain mkdir makes folders others can read."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def embedded(data_dir: Path) -> JobConfig:
    return JobConfig(data_dir=data_dir, max_upload_bytes=10**7, workers=1)


def partial_upload(data_dir: Path, name: str, age_seconds: float = 0.0) -> Path:
    """A file in the incoming folder, as an upload cut short by a killed server leaves it."""
    incoming = data_dir / "uploads" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / name
    path.write_bytes(b"\0" * 100)
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_a_new_data_directory_and_its_database_are_private_to_the_server(
    tmp_path: Path, dag: DagPipelineService, umask_022: None
) -> None:
    data_dir = tmp_path / "new" / "data"
    service = open_job_service(embedded(data_dir), dag)
    try:
        folders = [data_dir, data_dir / "uploads", data_dir / "uploads" / "incoming"]
        files = [data_dir / name for name in ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm", "jobs.lock")]
        assert {str(folder): oct(mode(folder)) for folder in folders} == {str(folder): "0o700" for folder in folders}
        assert {file.name: oct(mode(file)) for file in files} == {file.name: "0o600" for file in files}
    finally:
        service.close()


def test_an_existing_data_directory_open_to_others_is_kept_as_it_is_with_a_warning(
    tmp_path: Path, dag: DagPipelineService, umask_022: None, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="videodag_service"):
        open_job_service(embedded(data_dir), dag).close()

    assert mode(data_dir) == 0o755
    assert mode(data_dir / "uploads") == 0o700 and mode(data_dir / "jobs.sqlite3") == 0o600
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(str(data_dir) in message and "open to other users (mode 0755)" in message for message in warnings)


def test_a_private_data_directory_starts_without_a_warning(
    tmp_path: Path, dag: DagPipelineService, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    data_dir.chmod(0o700)
    with caplog.at_level(logging.WARNING, logger="videodag_service"):
        open_job_service(embedded(data_dir), dag).close()
    assert not [record for record in caplog.records if "open to other users" in record.getMessage()]


def test_the_embedded_backend_removes_every_partial_upload_at_start(
    tmp_path: Path, dag: DagPipelineService
) -> None:
    data_dir = tmp_path / "data"
    fresh = partial_upload(data_dir, "upload-fresh.mp4")
    old = partial_upload(data_dir, "upload-old.mp4", age_seconds=2 * HOUR)

    open_job_service(embedded(data_dir), dag).close()

    assert not fresh.exists() and not old.exists()


def test_a_server_refused_a_data_directory_in_use_leaves_its_uploads_alone(
    tmp_path: Path, dag: DagPipelineService
) -> None:
    data_dir = tmp_path / "data"
    service = open_job_service(embedded(data_dir), dag)
    try:
        arriving = partial_upload(data_dir, "upload-arriving.mp4")  # the running server's upload in progress
        with pytest.raises(DataDirectoryInUse):
            open_job_service(embedded(data_dir), dag)
        assert arriving.exists()
    finally:
        service.close()


def test_the_redis_backend_removes_only_partial_uploads_abandoned_for_an_hour(
    tmp_path: Path, dag: DagPipelineService, redis_server: RedisServer
) -> None:
    data_dir = tmp_path / "shared"
    arriving = partial_upload(data_dir, "videodag-upload-arriving.mp4")  # another replica is receiving it
    stalled = partial_upload(data_dir, "videodag-upload-stalled1.mp4", age_seconds=2 * HOUR)
    abandoned = partial_upload(data_dir, "videodag-upload-abandons.mp4", age_seconds=2 * HOUR)
    config = JobConfig(
        data_dir=data_dir,
        max_upload_bytes=10**7,
        backend=JobBackend.REDIS,
        redis_url=redis_server.url,
        key_prefix=uuid.uuid4().hex,
        queue_name=uuid.uuid4().hex,
    )

    with stalled.open("rb") as receiving:
        fcntl.flock(receiving, fcntl.LOCK_EX)  # still arriving: its client paused for hours, with no idle limit
        service: JobService = open_job_service(config, dag)
        service.close()

    assert arriving.exists() and stalled.exists() and not abandoned.exists()


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_maintenance_removes_partial_uploads_abandoned_for_an_hour_while_the_server_runs(
    tmp_path: Path, dag: DagPipelineService, redis_server: RedisServer, backend: str
) -> None:
    """A replica killed mid-upload and never restarted leaves its partial upload to the others."""
    data_dir = tmp_path / "data"
    config = embedded(data_dir) if backend == "embedded" else JobConfig(
        data_dir=data_dir, max_upload_bytes=10**7, backend=JobBackend.REDIS, redis_url=redis_server.url,
        key_prefix=uuid.uuid4().hex, queue_name=uuid.uuid4().hex,
    )
    service: JobService = open_job_service(config, dag)
    try:
        # Named as uploads are (videodag-upload-XXXXXXXX.ext), and locked while one arrives.
        arriving = partial_upload(data_dir, "videodag-upload-arriving.mp4")
        stalled = partial_upload(data_dir, "videodag-upload-stalled1.mp4", age_seconds=2 * HOUR)
        abandoned = partial_upload(data_dir, "videodag-upload-abandons.mp4", age_seconds=2 * HOUR)
        with stalled.open("rb") as receiving:
            fcntl.flock(receiving, fcntl.LOCK_EX)  # its client paused for hours, with no idle limit

            service.run_maintenance()

        assert arriving.exists() and stalled.exists() and not abandoned.exists()
    finally:
        service.close()


def test_upload_folders_removed_while_the_server_runs_are_made_again_for_the_next_submission(
    tmp_path: Path, dag: DagPipelineService, make_video
) -> None:
    """A tmp cleaner, or a failed start beside this server's, may take the empty folders away."""
    data_dir = tmp_path / "data"
    service = open_job_service(embedded(data_dir), dag)
    try:
        (data_dir / "uploads" / "incoming").rmdir()
        (data_dir / "uploads").rmdir()
        job = service.submit(JobRequest("frame_stats_v1"), [make_video(5).read_bytes()])
        assert job.state is not None and mode(data_dir / "uploads") == mode(data_dir / "uploads" / "incoming") == 0o700
    finally:
        service.close()


def test_a_discarded_store_takes_what_goes_with_it_while_it_still_holds_the_lock(tmp_path: Path) -> None:
    """Another server starting meanwhile must find the folder locked until all of it is gone."""
    data_dir = tmp_path / "data"
    store = SqliteJobStore(data_dir)
    held: list[bool] = []

    def still_locked() -> None:
        with (data_dir / "jobs.lock").open("a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
            else:
                held.append(False)

    store.close_and_discard(also=still_locked)
    assert held == [True]
    assert list(data_dir.iterdir()) == []


def _redis_replica(data_dir: Path, redis_server: RedisServer) -> JobConfig:
    return JobConfig(data_dir=data_dir, max_upload_bytes=10**7, backend=JobBackend.REDIS, redis_url=redis_server.url,
                     key_prefix=uuid.uuid4().hex, queue_name=uuid.uuid4().hex)


def test_a_redis_replica_and_an_embedded_server_never_share_a_data_directory(
    tmp_path: Path, dag: DagPipelineService, redis_server: RedisServer
) -> None:
    """Each removes the videos of the jobs its own store does not know: started on one folder,
    the second to start removed the first's videos (the embedded server at once, a replica at its
    next look), where replicas of one deployment share theirs."""
    data_dir = tmp_path / "data"
    embedded_server = open_job_service(embedded(data_dir), dag)
    try:
        with pytest.raises(DataDirectoryInUse, match=f"an embedded server serves jobs from {data_dir}: a Redis"):
            open_job_service(_redis_replica(data_dir, redis_server), dag)
    finally:
        embedded_server.close()
    replicas = [open_job_service(_redis_replica(data_dir, redis_server), dag) for _ in range(2)]
    try:
        with pytest.raises(DataDirectoryInUse, match=f"another process already serves jobs from {data_dir}"):
            open_job_service(embedded(data_dir), dag)
    finally:
        for replica in replicas:
            replica.close()
    open_job_service(embedded(data_dir), dag).close()  # the replicas gone, the folder is free


def test_a_start_that_fails_as_its_decoders_start_leaves_no_job_store_behind(
    tmp_path: Path, dag: DagPipelineService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoders that cannot start, or a second SIGTERM while they start: the empty database, its
    lock and the uploads folders stayed, where any other failed start removes them."""
    from videodag_service.jobs import backends

    def decoders_that_cannot_start(*args: object, **kwargs: object) -> None:
        raise SystemExit(143)  # as the second signal's handler does

    monkeypatch.setattr(backends, "VideoFilePipelineService", decoders_that_cannot_start)
    data_dir = tmp_path / "data"
    with pytest.raises(SystemExit):
        open_job_service(embedded(data_dir), dag)
    assert sorted(os.listdir(data_dir)) == []
    monkeypatch.undo()
    open_job_service(embedded(data_dir), dag).close()  # and the folder is free for the next start
