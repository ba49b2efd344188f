"""A Redis deployment's backup restored beside the live deployment, with real servers, Redis
processes and RQ workers: the restored deployment runs its queued jobs from its own folders.

Each queued job's RQ task was written by the live deployment's replica and names its folders;
workers that used them read, and deleted, the live deployment's videos.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from jobs_harness import deployment, finished, wait_for_job, watch_all

from videodag_client import JobState, RunOptions

FRAMES = 5


def test_a_backup_restored_beside_the_live_deployment_runs_its_jobs_from_its_own_folders(
    tmp_path: Path, sample_clip: Path
) -> None:
    # The restored deployment's folder is the test's own: the TMPDIR of its worker holds its
    # decoders' Unix socket, whose path has a short limit.
    with deployment("redis", tmp_path / "live") as live:
        live.workers.pop().stop()  # the job stays queued, as at the backup's moment
        queued = live.start_server().submit_job(sample_clip, "paced", RunOptions(max_frames=FRAMES))
        assert live.redis is not None
        live.redis.save_snapshot()
        (tmp_path / "redis").mkdir()
        shutil.copy(tmp_path / "live" / "redis" / "dump.rdb", tmp_path / "redis" / "dump.rdb")
        shutil.copytree(live.settings.data_dir, tmp_path / "data")
        live_videos = live.stored_uploads()
        assert len(live_videos) == 1

        # Its worker starts before its replica, and takes the task at once.
        with deployment("redis", tmp_path) as restored:
            client = restored.start_server()
            done = wait_for_job(client, queued.id, finished, timeout=60, what="the restored job to run")
            frames, _ = watch_all(client, queued.id)
            assert restored.stored_uploads() == [], "its video went from the restored folder"
        assert live.stored_uploads() == live_videos, "the live deployment's video is left alone"
        assert live.clients[0].get_job(queued.id).state is JobState.QUEUED

    assert done.state is JobState.SUCCEEDED, done.error
    assert [frame.frame_index for frame in frames] == list(range(FRAMES))
