"""Embedded jobs in the server's metrics: runs by pipeline and status, frames, upload bytes.

A real `JobService` (SQLite, worker threads, real decoding) reports to a real `ServerMetrics`,
read back from its registry as Prometheus would scrape it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fake_plugins import counter_pipeline, dag_with_test_pipelines
from fakes.media import garbage_bytes, write_indexed_video
from fakes.waiting import wait_until
from videodag_service.dag import DagPipelineService
from videodag_service.jobs import Job, JobConfig, JobRequest, JobService, JobState, open_job_service
from videodag_service.observability import ServerMetrics

FRAMES = 30
PIPELINES = {
    "slow.yaml": counter_pipeline("slow", delay_seconds=0.05),
    "failing.yaml": counter_pipeline("failing", fail_on=[3]),
}


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> DagPipelineService:
    return dag_with_test_pipelines(tmp_path_factory.mktemp("pipelines"), PIPELINES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("media") / "clip.avi", FRAMES, fps=25.0)


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


@pytest.fixture
def service(tmp_path: Path, dag: DagPipelineService, metrics: ServerMetrics) -> Iterator[JobService]:
    """One worker, so a second job waits while the first runs."""
    started = open_job_service(JobConfig(data_dir=tmp_path / "data", max_upload_bytes=10**7, workers=1), dag)
    started.observe(metrics)
    yield started
    started.close()


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def runs(metrics: ServerMetrics) -> dict[tuple[str, str], float]:
    """Every non-zero runs counter, by (pipeline, status)."""
    return {
        (s.labels["pipeline"], s.labels["status"]): s.value
        for family in metrics.registry.collect() if family.name == "videodag_runs"
        for s in family.samples if s.name == "videodag_runs_total" and s.value
    }


def submit(service: JobService, video: Path, pipeline_id: str, key: str | None = None) -> Job:
    return service.submit(JobRequest(pipeline_id, idempotency_key=key), iter([video.read_bytes()]))


def finished(service: JobService, job: Job) -> Job:
    assert wait_until(lambda: service.get(job.id).state.is_finished, timeout=30)
    # The end is stored before the run is counted, in the worker: wait for the worker to be done.
    assert service.wait_for_running_jobs(10)
    return service.get(job.id)


def test_a_succeeded_job_counts_as_an_ok_run_with_its_frames_and_upload_bytes(
    service: JobService, metrics: ServerMetrics, clip: Path
) -> None:
    job = submit(service, clip, "frame_stats_v1")
    assert finished(service, job).state is JobState.SUCCEEDED

    assert runs(metrics) == {("frame_stats_v1", "OK"): 1}
    assert sample(metrics, "videodag_frames_processed_total", pipeline="frame_stats_v1") == FRAMES
    assert sample(metrics, "videodag_upload_bytes_total", pipeline="frame_stats_v1") == clip.stat().st_size


def test_a_failed_job_counts_under_its_errors_status_with_the_frames_it_stored(
    service: JobService, metrics: ServerMetrics, clip: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "not_a_video.mp4"
    garbage.write_bytes(garbage_bytes(50_000))
    unreadable = finished(service, submit(service, garbage, "frame_stats_v1"))
    failing = finished(service, submit(service, clip, "failing"))

    assert unreadable.error is not None and unreadable.error.status_code == "INVALID_ARGUMENT"
    assert failing.error is not None and failing.error.status_code == "INTERNAL"
    assert runs(metrics) == {("frame_stats_v1", "INVALID_ARGUMENT"): 1, ("failing", "INTERNAL"): 1}
    assert sample(metrics, "videodag_frames_processed_total", pipeline="failing") == 3, "frames 0-2, before the failure"
    assert sample(metrics, "videodag_upload_bytes_total", pipeline="frame_stats_v1") == 50_000


def test_a_job_cancelled_while_running_counts_as_cancelled_and_one_cancelled_while_queued_not_at_all(
    service: JobService, metrics: ServerMetrics, clip: Path
) -> None:
    running = submit(service, clip, "slow")
    assert wait_until(lambda: service.get(running.id).frames_done >= 2, timeout=30)
    queued = submit(service, clip, "frame_stats_v1")  # the only worker is busy: it waits
    assert service.cancel(queued.id).state is JobState.CANCELLED
    assert service.cancel(running.id).state is JobState.CANCELLED

    assert wait_until(lambda: runs(metrics) != {}, timeout=10)
    assert service.wait_for_running_jobs(10)
    assert runs(metrics) == {("slow", "CANCELLED"): 1}
    stored = service.get(running.id).frames_done
    assert sample(metrics, "videodag_frames_processed_total", pipeline="slow") == stored < FRAMES
    assert sample(metrics, "videodag_frames_processed_total", pipeline="frame_stats_v1") == 0
    assert sample(metrics, "videodag_upload_bytes_total", pipeline="frame_stats_v1") == clip.stat().st_size


def test_a_job_interrupted_by_shutdown_is_not_an_ended_run(
    tmp_path: Path, dag: DagPipelineService, clip: Path
) -> None:
    """It runs again at the next start, and that run is the one counted."""
    metrics = ServerMetrics()
    config = JobConfig(data_dir=tmp_path / "data", max_upload_bytes=10**7, workers=1)
    service = open_job_service(config, dag)
    service.observe(metrics)
    try:
        job = submit(service, clip, "slow")
        assert wait_until(lambda: service.get(job.id).frames_done >= 2, timeout=30)
    finally:
        service.close()
    assert runs(metrics) == {}

    restarted = open_job_service(config, dag)
    restarted.observe(metrics)
    try:
        assert finished(restarted, job).state is JobState.SUCCEEDED
    finally:
        restarted.close()
    assert runs(metrics) == {("slow", "OK"): 1}


def test_a_repeated_idempotent_submit_stores_and_counts_no_bytes(
    service: JobService, metrics: ServerMetrics, clip: Path
) -> None:
    first = submit(service, clip, "frame_stats_v1", key="upload-1")
    again = submit(service, clip, "frame_stats_v1", key="upload-1")

    assert again.id == first.id
    assert sample(metrics, "videodag_upload_bytes_total", pipeline="frame_stats_v1") == clip.stat().st_size


def test_a_failing_observer_fails_no_job(service: JobService, clip: Path) -> None:
    class Broken:
        def record_run(self, pipeline_id: str, status: str) -> None:
            raise RuntimeError("metrics down")

        record_frame = record_upload = record_run  # type: ignore[assignment]

    service.observe(Broken())
    job = submit(service, clip, "frame_stats_v1")
    assert finished(service, job).state is JobState.SUCCEEDED
