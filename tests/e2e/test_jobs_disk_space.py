"""The data directory's disk: SubmitJob's free-space reserve as a setting, and a start on a full disk.

The reserve is checked against the real disk: a server given a reserve larger than the free
space refuses every submission, as one on a nearly full disk would. A full disk at start needs
a real one: a small tmpfs, mounted where the tests may (root, as on the test machines).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ServerFactory
from jobs_harness import VENV_BIN

import videodag_service.disk_space as disk_space_module
import videodag_service.jobs.backends as backends_module
from videodag_client import JobState, ResourceExhausted
from videodag_service.errors import DiskFull
from videodag_service.jobs import Job, SqliteJobStore, StoredVideo
from videodag_service.jobs import JobState as StoredJobState
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import JobError, JobFrame, RunClaim
from videodag_service.server_arguments import build_parser, settings_from
from videodag_service.settings import Settings, SettingsError
from videodag_service.video import SamplingOptions

MIB = 1024 * 1024


def test_the_reserve_is_a_setting_with_a_flag_a_variable_and_its_default() -> None:
    assert Settings().job_min_free_bytes == 64 * MIB
    assert settings_from(["--job-min-free-bytes", "1000"], environ={}).job_min_free_bytes == 1000
    assert settings_from([], environ={"VIDEODAG_JOB_MIN_FREE_BYTES": "0"}).job_min_free_bytes == 0
    with pytest.raises(SettingsError, match="--job-min-free-bytes"):
        settings_from(["--job-min-free-bytes", "-1"], environ={})
    help_text = " ".join(build_parser().format_help().split())
    assert "--job-min-free-bytes" in help_text and "VIDEODAG_JOB_MIN_FREE_BYTES; default 67108864" in help_text


def test_a_reserve_over_the_free_space_refuses_submissions_and_names_itself(
    make_server: ServerFactory, sample_clip: Path, tmp_path: Path
) -> None:
    reserve = shutil.disk_usage(tmp_path).free + 1024 * MIB
    server = make_server(job_min_free_bytes=reserve)

    with pytest.raises(ResourceExhausted) as refused:
        server.client.submit_job(sample_clip, "frame_stats_v1")

    error = refused.value
    assert error.reason == "DISK_FULL"
    assert f"{reserve} must stay free" in error.message
    assert error.metadata["min_free_bytes"] == str(reserve)
    assert error.metadata["declared_size_bytes"] == str(sample_clip.stat().st_size)
    assert list(server.client.list_jobs().jobs) == []
    # Without a reserve the same disk takes the job.
    relaxed = make_server(job_min_free_bytes=0)
    assert relaxed.client.submit_job(sample_clip, "frame_stats_v1").state is JobState.QUEUED


@contextlib.contextmanager
def full_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` at `folder`, to be filled to the last byte; skips where mounting is not allowed."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                             check=False, capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("a full disk needs a tmpfs, and mounting one needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False, capture_output=True)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    assert shutil.disk_usage(folder).free == 0


def start_server(data_dir: Path, temp_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "videodag-server"), "--host", "127.0.0.1", "--port", "0", "--temp-dir", str(temp_dir),
         "--data-dir", str(data_dir), "--log-format", "text"],
        capture_output=True, text=True, timeout=120, check=False,
    )


def assert_refused_for_a_full_disk(started: subprocess.CompletedProcess[str], data_dir: Path) -> None:
    assert started.returncode == 1, started.stderr
    assert "Traceback" not in started.stderr, started.stderr
    last_line = started.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"videodag-server: cannot start: no space left on the disk of the job data directory {data_dir} (--data-dir"
    ), started.stderr


def test_a_start_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    with full_disk(tmp_path / "disk") as disk:
        fill(disk)
        started = start_server(disk / "data", tmp_path / "uploads")
        assert_refused_for_a_full_disk(started, disk / "data")
        assert sorted(path.name for path in disk.iterdir()) == ["filler"]  # its new data folder went again


def test_a_restart_on_a_full_disk_with_a_job_to_recover_says_so_and_keeps_the_job(tmp_path: Path) -> None:
    with full_disk(tmp_path / "disk") as disk:
        data_dir = disk / "data"
        store = SqliteJobStore(data_dir)
        job = store.create(Job(new_job_id(), StoredJobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                               StoredVideo("missing.mp4", 1, "0" * 64), 0.0))
        store.claim(job.id, 1, 0.0)  # left RUNNING, as by a server that was killed
        store.close()
        fill(disk)

        started = start_server(data_dir, tmp_path / "uploads")

        assert_refused_for_a_full_disk(started, data_dir)
        (disk / "filler").unlink()
        store = SqliteJobStore(data_dir)  # the lock was released; the job is as it was left
        try:
            assert (store.get(job.id).state, store.get(job.id).attempt) == (StoredJobState.RUNNING, 1)
        finally:
            store.close()


def test_a_restart_after_a_crash_on_a_full_disk_is_refused_and_keeps_the_queued_jobs(tmp_path: Path) -> None:
    """A database left by a process that died keeps its write-ahead log, and SQLite opened it on a
    full disk all the same: the server started, and the jobs it recovered failed at their first
    result, for good, their videos deleted."""
    with full_disk(tmp_path / "disk", "20m") as disk:
        data_dir = disk / "data"
        crash = textwrap.dedent(f"""
            import os
            from videodag_service.jobs import Job, JobState, SqliteJobStore, StoredVideo
            from videodag_service.jobs.ids import new_job_id
            from videodag_service.video import SamplingOptions
            store = SqliteJobStore({str(data_dir)!r})
            for _ in range(1500):  # past SQLite's checkpoint: a log file with room in it, as a server's that ran
                job = store.create(Job(new_job_id(), JobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                                       StoredVideo("missing.mp4", 1, "0" * 64), 0.0))
            print(job.id, flush=True)
            os._exit(0)  # killed: nothing closed, the log file left beside the database
        """)
        died = subprocess.run([str(VENV_BIN / "python"), "-c", crash], capture_output=True, text=True, timeout=60,
                              check=True)
        job_id = died.stdout.strip()
        assert (data_dir / "jobs.sqlite3-wal").stat().st_size > 1024 * 1024
        fill(disk)

        started = start_server(data_dir, tmp_path / "uploads")

        assert_refused_for_a_full_disk(started, data_dir)
        (disk / "filler").unlink()
        store = SqliteJobStore(data_dir)
        try:
            assert store.get(job_id).state is StoredJobState.QUEUED
        finally:
            store.close()


def test_a_start_on_a_disk_under_the_reserve_warns_the_operator(
    make_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every submission is then refused; the operator heard of it only from the callers."""
    free = shutil.disk_usage(tmp_path).free
    server = make_server(job_min_free_bytes=free * 2)
    data_dir = server.running.settings.data_dir
    [warning] = [record.getMessage() for record in caplog.records if "--job-min-free-bytes" in record.getMessage()]
    assert warning.startswith(f"the disk of the job data directory {data_dir} has ")
    assert warning.endswith(f"bytes free, less than the {free * 2} --job-min-free-bytes keeps free: every job "
                            "submission is refused (DISK_FULL) until space is freed")


def test_a_job_database_removed_while_the_server_runs_is_an_error_in_its_log(
    make_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite goes on writing into a removed file: nothing failed, and every job recorded after
    was gone at the next start. Maintenance says so once, naming the files and the folder."""
    server = make_server()
    jobs = server.running.jobs
    data_dir = server.running.settings.data_dir
    lock = data_dir / "jobs.lock"
    os.utime(lock, (1_000_000_000, 1_000_000_000))  # untouched for years, as a cleaner by age sees it
    jobs.run_maintenance()
    assert lock.stat().st_mtime > time.time() - 3600  # refreshed: a cleaner by age leaves it
    assert not [record for record in caplog.records if record.levelname == "ERROR"]

    (data_dir / "jobs.sqlite3").unlink()
    jobs.run_maintenance()
    jobs.run_maintenance()

    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [
        f"job store: jobs.sqlite3 in {data_dir} was removed or replaced while the server ran (a cleaner of "
        "temporary files?): jobs recorded from now on are lost when it restarts, and another server may take the "
        "data directory; restart it, with a --data-dir no cleaner touches"
    ]


@pytest.mark.parametrize("inodes", [3, 4, 6, 7])
def test_a_start_on_a_disk_out_of_inodes_says_so_in_one_line_and_leaves_nothing(tmp_path: Path, inodes: int) -> None:
    """Bytes free but no inode left, found at one step or another of the start (the database, its
    log, the uploads folder): a raw errno or SQLite's "unable to open database file", with the lock
    and an empty database left behind."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=20m,nr_inodes={inodes},mode=0700", "tmpfs", str(disk)],
                      check=False, capture_output=True).returncode != 0:
        pytest.skip("a disk out of inodes needs a tmpfs, and mounting one needs root")
    try:
        started = start_server(disk / "data", tmp_path / "uploads")
        assert_refused_for_a_full_disk(started, disk / "data")
        assert [path for path in disk.rglob("*") if not path.is_dir()] == []  # no lock, no database left
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False, capture_output=True)


@pytest.mark.parametrize(("root", "refused"), [(True, False), (False, True)])
def test_a_start_counts_the_blocks_a_file_system_keeps_for_root_when_run_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: bool, refused: bool
) -> None:
    """ext4 keeps 5% of its blocks for root: a server run as root that had been writing into them
    was refused at its next start as on a full disk."""
    real = os.statvfs(tmp_path)

    def only_roots_blocks_left(path: str | os.PathLike[str]) -> os.statvfs_result:
        fields = list(real)
        fields[3], fields[4] = 10 * 1024 * 1024 // real.f_frsize, 0  # f_bfree: 10 MiB, f_bavail: none
        return os.statvfs_result(fields)

    monkeypatch.setattr(disk_space_module.os, "statvfs", only_roots_blocks_left)
    monkeypatch.setattr(disk_space_module.os, "geteuid", lambda: 0 if root else 1000)
    assert backends_module._no_room_left(tmp_path) is refused


def running_job_with_results(store: SqliteJobStore, frames: int, result_bytes: int) -> Job:
    """A job claimed by attempt 1, with `frames` results of about `result_bytes` each."""
    job = store.create(Job(new_job_id(), StoredJobState.QUEUED, "frame_stats_v1", SamplingOptions(),
                           StoredVideo("missing.mp4", 1, "0" * 64), 0.0))
    store.claim(job.id, 1, 0.0)
    for index in range(frames):
        store.append_frame(RunClaim(job.id, 1, 0.0), JobFrame(index, index / 25, {"blob": "x" * result_bytes}))
    return job


def test_a_finished_job_on_a_full_disk_can_be_deleted(tmp_path: Path) -> None:
    """Python's SQLite zeroed every freed page through its log: deleting took as much free space
    as the results deleted, so on a full disk DeleteJob (and the retention) failed DISK_FULL and
    nothing could ever free room."""
    with full_disk(tmp_path / "disk", size="16m") as disk:
        store = SqliteJobStore(disk / "data")
        try:
            job = running_job_with_results(store, frames=2000, result_bytes=2000)  # about 4 MB
            store.cancel(job.id, 0.0, 60.0)
            fill(disk)
            store.delete(job.id)
            assert store.frames_after(job.id, None, 10) == []
        finally:
            store.close()


def test_free_pages_in_the_database_count_as_room_for_results_only_while_the_disk_has_room_for_its_log(
    tmp_path: Path,
) -> None:
    """Results reuse a deleted job's pages, but go through the log first, which grows on the disk:
    counted whatever the disk had left, the pages let results fill it to 0 bytes, after which
    no job's end could be recorded."""
    with full_disk(tmp_path / "disk", size="48m") as disk:
        store = SqliteJobStore(disk / "data")
        try:
            deleted = running_job_with_results(store, frames=5000, result_bytes=4000)  # 20 MB, free once deleted
            store.cancel(deleted.id, 0.0, 60.0)
            store.delete(deleted.id)
            fill(disk)
            filler = disk / "filler"
            os.truncate(filler, filler.stat().st_size - 2 * MIB)  # 2 MiB left, under the log's room
            store.results_keep_free_bytes = 16 * MIB
            with pytest.raises(DiskFull, match="results stop there"):
                running_job_with_results(store, frames=1000, result_bytes=4000)
            (job,) = store.list_jobs(10, None, [StoredJobState.RUNNING]).jobs
            full = JobError("RESOURCE_EXHAUSTED", "DISK_FULL", "full")
            assert store.finish(RunClaim(job.id, 1, 0.0), 1.0, 60.0, error=full)
        finally:
            store.close()
