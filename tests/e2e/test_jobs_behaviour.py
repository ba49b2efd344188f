"""The job contract, end to end, against both backends: the embedded one (SQLite and worker
threads in the server) and Redis + RQ (a real redis-server and real `rq worker` processes)."""

from __future__ import annotations

import io
import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from jobs_harness import (
    JobsDeployment,
    deployment,
    finished,
    is_running_with_frames,
    wait_for_job,
    wait_until,
    watch_all,
)

from fakes.media import garbage_bytes
from videodag.v1 import job_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_client import (
    FailedPrecondition,
    FrameResult,
    Internal,
    InvalidArgument,
    JobState,
    NotFound,
    ResourceExhausted,
    RunOptions,
    RunSummary,
    Unavailable,
    VideodagClient,
)
from videodag_client._errors import from_grpc_error
from videodag_client._jobs import start_job_submission

BACKENDS = ["embedded", "redis"]


@pytest.fixture(params=BACKENDS)
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobsDeployment]:
    with deployment(request.param, tmp_path) as deployed:
        yield deployed


@pytest.fixture
def client(jobs: JobsDeployment) -> VideodagClient:
    return jobs.start_server()


def test_submit_returns_the_queued_job_and_its_watch_has_every_frame_once(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    job = client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="first")

    assert job.state is JobState.QUEUED
    assert (job.pipeline_id, job.file_name, job.idempotency_key) == ("frame_stats_v1", sample_clip.name, "first")
    assert job.size_bytes == sample_clip.stat().st_size
    frames, updates = watch_all(client, job.id)

    final = updates[-1]
    assert final.state is JobState.SUCCEEDED
    assert [frame.frame_index for frame in frames] == list(range(120))
    assert final.summary is not None and final.summary.frames_processed == 120
    assert (final.frames_done, final.frames_total, final.attempt) == (120, 120, 1)
    assert final.video is not None and (final.video.width, final.video.height) == (768, 576)
    assert final.expires_at is not None and final.ended_at is not None and final.expires_at > final.ended_at
    # A job reports exactly what the synchronous call reports for the same video.
    with client.upload_and_run(sample_clip, "frame_stats_v1") as run:
        synchronous = [event for event in run if isinstance(event, FrameResult)]
    assert [frame.result for frame in frames] == [frame.result for frame in synchronous]
    wait_until(lambda: jobs.stored_uploads() == [], timeout=10, what="the finished job's video to be deleted")


def test_watch_resumes_after_a_frame_index_without_gaps_or_duplicates(
    client: VideodagClient, sample_clip: Path
) -> None:
    job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=40))
    received: list[int] = []
    # First connection: read a few frames of the running job, then drop it.
    with client.watch_job(job.id) as events:
        for event in events:
            if isinstance(event, FrameResult):
                received.append(event.frame_index)
                if len(received) == 7:
                    break
    assert client.get_job(job.id).state in (JobState.QUEUED, JobState.RUNNING)
    # Second connection resumes after the last index seen, while the job still runs.
    frames, updates = watch_all(client, job.id, after=received[-1])
    received += [frame.frame_index for frame in frames]

    assert received == list(range(40))
    assert updates[-1].state is JobState.SUCCEEDED
    # Watching a finished job replays its results, from any resume point.
    replayed, replay_updates = watch_all(client, job.id, after=29)
    assert [frame.frame_index for frame in replayed] == list(range(30, 40))
    assert [update.state for update in replay_updates] == [JobState.SUCCEEDED]


def test_a_watch_after_frame_minus_one_has_every_frame_from_the_first(
    client: VideodagClient, sample_clip: Path
) -> None:
    """The contract: "Unset (or -1) sends every stored frame from the first"; on Redis the watch
    ended INTERNAL ("Invalid stream ID"), whether the job still ran or had finished."""
    job = client.submit_job(sample_clip, "paced", RunOptions(max_frames=20))
    frames, updates = watch_all(client, job.id, after=-1)  # from before its first frame is stored
    assert [frame.frame_index for frame in frames] == list(range(20))
    assert updates[-1].state is JobState.SUCCEEDED

    replayed, replay_updates = watch_all(client, job.id, after=-1)
    assert [frame.frame_index for frame in replayed] == list(range(20))
    assert [update.state for update in replay_updates] == [JobState.SUCCEEDED]


def test_a_clients_default_timeout_does_not_end_a_watch_of_a_longer_job(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    with VideodagClient(f"127.0.0.1:{jobs.servers[-1].port}", timeout=1.0) as quick:
        job = quick.submit_job(sample_clip, "paced")  # 120 frames at 0.03 s: longer than the deadline
        frames, updates = watch_all(quick, job.id)
    assert updates[-1].state is JobState.SUCCEEDED
    ended, started = updates[-1].ended_at, updates[-1].started_at
    assert ended is not None and started is not None and (ended - started).total_seconds() > 1.0
    assert [frame.frame_index for frame in frames] == list(range(120))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_result_over_the_message_limit_fails_the_job_naming_the_node_not_its_watchers(
    tmp_path: Path, sample_clip: Path, backend: str
) -> None:
    with deployment(backend, tmp_path, max_message_bytes=64 * 1024) as small:
        client = small.start_server()
        job = client.submit_job(sample_clip, "oversized", chunk_size=32 * 1024)
        frames, updates = watch_all(client, job.id)
        with pytest.raises(Internal, match="output 'text' is 100018 bytes as sent") as synchronous:
            list(client.upload_and_run(sample_clip, "oversized", chunk_size=32 * 1024))
        assert synchronous.value.reason == "NODE_FAILED"
    final = updates[-1]
    assert final.state is JobState.FAILED and frames == []
    assert isinstance(final.error, Internal) and final.error.reason == "NODE_FAILED"
    assert "node 'pad' (test.padding) failed on frame 0: output 'text' is 100018 bytes as sent" in final.error.message
    assert f"over the {64 * 1024 - 1024} bytes a frame's result may take" in final.error.message


def test_closing_a_client_on_a_borrowed_channel_ends_its_watch_and_submission_as_closed(
    tmp_path: Path, sample_clip: Path
) -> None:
    with deployment("embedded", tmp_path) as embedded:
        owner = embedded.start_server()
        job = owner.submit_job(sample_clip, "paced")
        with grpc.insecure_channel(f"127.0.0.1:{embedded.servers[0].port}") as channel:
            client = VideodagClient.from_channel(channel)
            watch = client.watch_job(job.id)
            next(watch)
            released = threading.Event()
            submission = start_job_submission(client, _HeldFile(released, sample_clip.read_bytes()), "paced",
                                              checksum=False)
            client.close()
            released.set()
            with pytest.raises(FailedPrecondition) as watch_closed:
                list(watch)
            with pytest.raises(FailedPrecondition) as submission_closed:
                submission.result()
            assert watch_closed.value.reason == submission_closed.value.reason == "CLIENT_CLOSED"
            # The channel's owner goes on with it.
            assert VideodagClient.from_channel(channel).get_job(job.id).id == job.id
        assert [queued.id for queued in owner.list_jobs().jobs] == [job.id], "the cut submission queued nothing"


def test_a_job_of_a_text_upload_fails_quoting_it_to_its_caller_and_not_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = tmp_path / "notes.mp4"
    secrets.write_text("DB_PASSWORD=hunter2 patient: Jane Roe, DOB 1970-01-01\n")
    with deployment("embedded", tmp_path) as embedded, caplog.at_level(logging.DEBUG):
        client = embedded.start_server()
        failed = wait_for_job(client, client.submit_job(secrets, "frame_stats_v1").id, finished)
    assert failed.error is not None and "starting 'DB_PASSWORD=hunter2" in failed.error.message
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"job {failed.id} failed: Unable to read video file 'notes.mp4': not a video OpenCV can decode: it is " \
           "text (its start is told to the caller)" in logged
    assert "hunter2" not in logged


class _HeldFile(io.BytesIO):
    """A video whose upload waits until released."""

    def __init__(self, released: threading.Event, data: bytes) -> None:
        super().__init__(data)
        self._released = released

    def read(self, size: int | None = -1) -> bytes:
        self._released.wait(30)
        return super().read(size)


def test_cancel_a_running_job_stops_it_and_keeps_its_results(client: VideodagClient, sample_clip: Path) -> None:
    job = client.submit_job(sample_clip, "paced")
    wait_for_job(client, job.id, is_running_with_frames(3), what="the job to run")

    cancelled = client.cancel_job(job.id)

    assert cancelled.state is JobState.CANCELLED
    frames, updates = watch_all(client, job.id)
    assert updates[-1].state is JobState.CANCELLED
    done = updates[-1].frames_done
    assert 3 <= done < 120
    assert [frame.frame_index for frame in frames] == list(range(done))
    # The worker stopped: nothing more is stored after the cancel settles.
    wait_until(lambda: client.get_job(job.id).frames_done == done, what="the stored frames to settle")
    assert client.cancel_job(job.id).state is JobState.CANCELLED, "cancelling again changes nothing"


def test_cancel_a_queued_job_means_it_never_runs(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    busy = client.submit_job(sample_clip, "paced", RunOptions(max_frames=60))
    wait_for_job(client, busy.id, is_running_with_frames(1), what="the first job to occupy the only worker")
    queued = client.submit_job(sample_clip, "frame_stats_v1")
    assert client.get_job(queued.id).state is JobState.QUEUED

    cancelled = client.cancel_job(queued.id)

    assert cancelled.state is JobState.CANCELLED
    assert wait_for_job(client, busy.id, finished).state is JobState.SUCCEEDED
    frames, updates = watch_all(client, queued.id)
    assert frames == []
    assert [u.state for u in updates] == [JobState.CANCELLED]
    assert updates[-1].started_at is None and updates[-1].frames_done == 0
    assert queued.id not in "".join(jobs.stored_uploads())


def test_a_queued_job_whose_stored_video_was_removed_fails_as_the_servers_trouble(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    """A cleaner of the data folder (or an operator) removed the video while the job waited:
    it failed as INVALID_ARGUMENT VIDEO_UNREADABLE, "no such file", blaming the video."""
    busy = client.submit_job(sample_clip, "paced", RunOptions(max_frames=60))
    wait_for_job(client, busy.id, is_running_with_frames(1), what="the first job to occupy the only worker")
    queued = client.submit_job(sample_clip, "frame_stats_v1")
    [stored] = [name for name in jobs.stored_uploads() if name.startswith(queued.id)]
    (jobs.settings.data_dir / "uploads" / stored).unlink()

    failed = wait_for_job(client, queued.id, finished)

    assert failed.state is JobState.FAILED and isinstance(failed.error, Unavailable)
    assert failed.error.reason == "VIDEO_FILE_MISSING"
    assert failed.error.message.startswith("Unable to read video file 'pedestrians_120.mp4': the server's stored copy")
    assert wait_for_job(client, busy.id, finished).state is JobState.SUCCEEDED


def test_a_failed_job_carries_the_error_the_synchronous_call_raises(
    client: VideodagClient, tmp_path: Path, sample_clip: Path
) -> None:
    garbage = tmp_path / "not_a_video.mp4"
    garbage.write_bytes(garbage_bytes(50_000))
    unreadable = client.submit_job(garbage, "frame_stats_v1")
    failing = client.submit_job(sample_clip, "failing")

    unreadable_job = wait_for_job(client, unreadable.id, finished)
    failing_frames, failing_updates = watch_all(client, failing.id)

    assert unreadable_job.state is JobState.FAILED
    assert isinstance(unreadable_job.error, InvalidArgument)
    with pytest.raises(InvalidArgument) as synchronous, client.upload_and_run(garbage, "frame_stats_v1") as run:
        list(run)
    assert unreadable_job.error.reason == synchronous.value.reason == "VIDEO_UNREADABLE"
    assert unreadable_job.error.message.startswith("Unable to read video file 'not_a_video.mp4': ")
    assert synchronous.value.message.startswith("Unable to read video file 'not_a_video.mp4': ")
    failed = failing_updates[-1]
    assert failed.state is JobState.FAILED and isinstance(failed.error, Internal)
    assert failed.error.reason == "NODE_FAILED" and failed.error.metadata["frame_index"] == "3"
    assert [frame.frame_index for frame in failing_frames] == [0, 1, 2], "results before the failure are kept"


def test_submit_refuses_bad_uploads_before_queuing_anything(
    client: VideodagClient, sample_clip: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(NotFound):
        client.submit_job(sample_clip, "no_such_pipeline")
    with pytest.raises(InvalidArgument) as empty_refused:
        client.submit_job(empty, "frame_stats_v1")
    assert empty_refused.value.message == "the upload of 'empty.mp4' is empty: no video bytes arrived"
    with pytest.raises(InvalidArgument):
        client.submit_job(sample_clip, "frame_stats_v1", RunOptions(frame_stride=-1))
    with pytest.raises(InvalidArgument):
        client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="spaces are not allowed")
    assert client.list_jobs().jobs == ()


def test_submit_with_a_used_idempotency_key_returns_the_first_job(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    first = client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="upload-42")
    again = client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="upload-42")
    other = client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="upload-43")

    assert again.id == first.id and other.id != first.id
    assert sorted(job.id for job in client.iter_jobs()) == sorted([first.id, other.id])
    with pytest.raises(FailedPrecondition) as reused:
        client.submit_job(sample_clip, "motion_v1", idempotency_key="upload-42")
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert reused.value.metadata == {"job_id": first.id, "pipeline_id": "frame_stats_v1", "differs": "pipeline"}
    for job_id in (first.id, other.id):
        wait_for_job(client, job_id, finished)
    # A finished job's video is deleted just after its state is written.
    wait_until(lambda: jobs.stored_uploads() == [], timeout=10, what="the finished jobs' videos to be deleted")


def test_a_used_idempotency_key_with_another_video_or_other_options_is_refused_not_answered_with_its_job(
    client: VideodagClient, jobs: JobsDeployment, make_video
) -> None:
    """The key's job was returned, and the caller told its video was queued when it was not (two
    clients picking the same key, or one reusing it for the next file); its options the same."""
    video, another = make_video(3), make_video(4)
    options = RunOptions(frame_stride=2, max_frames=5, start_seconds=0.04)
    first = client.submit_job(video, "frame_stats_v1", options, idempotency_key="upload-7")
    assert client.submit_job(video, "frame_stats_v1", options, idempotency_key="upload-7").id == first.id

    with pytest.raises(FailedPrecondition) as other_video:
        client.submit_job(another, "frame_stats_v1", options, idempotency_key="upload-7")
    with pytest.raises(FailedPrecondition) as other_options:
        client.submit_job(video, "frame_stats_v1", RunOptions(frame_stride=3), idempotency_key="upload-7")

    assert other_video.value.reason == other_options.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert other_video.value.metadata["differs"] == "video"
    assert other_video.value.message == (
        f"idempotency key 'upload-7' was already used for job {first.id} of another video (its size or SHA-256 is "
        "not this submission's); use a new key for another submission, or the same pipeline, options and video to "
        "find that job")
    assert other_options.value.metadata == {"job_id": first.id, "pipeline_id": "frame_stats_v1",
                                            "differs": "sampling"}
    assert [job.id for job in client.iter_jobs()] == [first.id]
    wait_for_job(client, first.id, finished)
    wait_until(lambda: jobs.stored_uploads() == [], timeout=10, what="every video but the job's to be deleted")


def test_list_jobs_pages_newest_first_and_filters_by_state(client: VideodagClient, make_video) -> None:
    video = make_video(5)
    submitted = [client.submit_job(video, "frame_stats_v1").id for _ in range(5)]
    for job_id in submitted:
        wait_for_job(client, job_id, finished)
    cancelled = client.submit_job(video, "paced", RunOptions())
    client.cancel_job(cancelled.id)
    newest_first = [cancelled.id, *reversed(submitted)]

    pages = []
    token = ""
    while True:
        page = client.list_jobs(page_size=2, page_token=token)
        pages.append([job.id for job in page.jobs])
        token = page.next_page_token
        if not token:
            break

    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:6]]
    assert [job.id for job in client.iter_jobs(states=[JobState.CANCELLED])] == [cancelled.id]
    assert [job.id for job in client.iter_jobs(states=[JobState.SUCCEEDED], page_size=4)] == newest_first[1:]
    assert client.list_jobs(states=[JobState.FAILED]).jobs == ()
    # A state repeated 300,000 times filters as it does once (the embedded store's query took
    # each as a parameter, and refused that many as INTERNAL).
    repeated = client.list_jobs(states=[JobState.CANCELLED, JobState.FAILED] * 150_000)
    assert [job.id for job in repeated.jobs] == [cancelled.id]
    with pytest.raises(InvalidArgument):
        client.list_jobs(page_token="forged")


def test_a_listing_names_every_bad_field_at_once(client: VideodagClient, jobs: JobsDeployment) -> None:
    """A bad page size, a forged token and bad states are all named in one refusal, as a config's are."""
    request = video_pipeline_service_pb2.ListJobsRequest(
        page_size=-1, page_token="forged", states=[job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_UNSPECIFIED, 99]
    )
    with grpc.insecure_channel(f"127.0.0.1:{jobs.servers[0].port}") as channel:
        stub = video_pipeline_service_pb2_grpc.VideoPipelineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListJobs(request, timeout=30)
    error = from_grpc_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OPTIONS")
    assert [violation.field for violation in error.field_violations] == [
        "page_size", "page_token", "states[1]", "states[2]"
    ]
    assert error.message == (
        "invalid fields: page_size: must be 0 (the default) or more, got -1; "
        "page_token: is not a token this server issued; "
        "states[1]: 0 is not a job state to filter by; states[2]: 99 is not a job state to filter by"
    )


def test_delete_removes_a_finished_job_and_refuses_an_unfinished_one(
    client: VideodagClient, jobs: JobsDeployment, sample_clip: Path
) -> None:
    running = client.submit_job(sample_clip, "paced")
    with pytest.raises(FailedPrecondition) as unfinished:
        client.delete_job(running.id)
    assert unfinished.value.reason == "JOB_NOT_FINISHED"
    assert unfinished.value.metadata["job_id"] == running.id
    assert unfinished.value.metadata["state"] in {"QUEUED", "RUNNING"}
    client.cancel_job(running.id)
    done = client.submit_job(sample_clip, "frame_stats_v1", RunOptions(max_frames=5), idempotency_key="k")
    wait_for_job(client, done.id, finished)

    client.delete_job(done.id)
    client.delete_job(running.id)

    for job_id in (done.id, running.id):
        with pytest.raises(NotFound):
            client.get_job(job_id)
        with pytest.raises(NotFound):
            list(client.watch_job(job_id))
    assert client.list_jobs().jobs == ()
    assert client.submit_job(sample_clip, "frame_stats_v1", idempotency_key="k").id != done.id, "key freed"
    with pytest.raises(NotFound):
        client.delete_job("0" * 24)


def test_finished_jobs_are_removed_when_retention_ends(tmp_path: Path, make_video, backend: str) -> None:
    with deployment(backend, tmp_path, job_retention_seconds=0.5) as jobs:
        client = jobs.start_server()
        job = client.submit_job(make_video(3), "frame_stats_v1")
        done = wait_for_job(client, job.id, finished)
        assert done.state is JobState.SUCCEEDED

        wait_until(lambda: client.list_jobs().jobs == (), timeout=10, what="retention to delete the job")

        with pytest.raises(NotFound):
            client.get_job(job.id)
        assert jobs.stored_uploads() == []


def test_a_worker_keeps_nothing_in_its_temp_folder_from_the_jobs_it_ran(tmp_path: Path, sample_clip: Path) -> None:
    """Each job's work horse starts a forkserver for its decoders, whose socket multiprocessing
    puts in a temp folder; the horse ends with os._exit, so the worker removes what it left."""
    with deployment("redis", tmp_path) as jobs:
        client = jobs.start_server()
        temp_dir = jobs.workers[0].temp_dir
        done = client.submit_job(sample_clip, "frame_stats_v1")
        assert wait_for_job(client, done.id, finished).state is JobState.SUCCEEDED
        cancelled = client.submit_job(sample_clip, "paced")
        wait_for_job(client, cancelled.id, is_running_with_frames(3), what="the job to run")
        client.cancel_job(cancelled.id)

        def left_in_temp_dir() -> list[str]:
            return sorted(str(path.relative_to(temp_dir)) for path in temp_dir.rglob("*"))

        # The worker's own multiprocessing folder stays while it lives, and nothing in it.
        wait_until(lambda: len(left_in_temp_dir()) == 1, timeout=10, what="the work horses' leftovers to go")
        assert left_in_temp_dir()[0].startswith("pymp-")
        # A /tmp cleaner removes it while the worker waits: the next job runs all the same.
        shutil.rmtree(temp_dir / left_in_temp_dir()[0])
        after = client.submit_job(sample_clip, "frame_stats_v1")
        assert wait_for_job(client, after.id, finished).state is JobState.SUCCEEDED
        jobs.workers[0].stop()
        assert left_in_temp_dir() == []


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_job_keeps_its_sampling_options_and_summary(client: VideodagClient, make_video) -> None:
    job = client.submit_job(make_video(12), "frame_stats_v1", RunOptions(frame_stride=5))

    final = wait_for_job(client, job.id, finished)

    assert isinstance(final.summary, RunSummary)
    assert final.summary.frames_processed == 3 and final.frames_total == 3
    assert final.options.frame_stride == 5
    assert not final.summary.ended_early and final.summary.frames_in_video == 12
    frames, _ = watch_all(client, job.id)
    assert [frame.frame_index for frame in frames] == [0, 5, 10]


def test_submissions_still_uploading_count_against_a_full_queue(
    backend: str, tmp_path: Path, make_video, thousand_frame_video: Path
) -> None:
    """Submits arriving together each saw the same room, checked before their uploads: a cap
    of 10 let 16 in. One let in counts as waiting from then on, until its job is queued."""
    with deployment(backend, tmp_path, max_queued_jobs=1) as jobs:
        client = jobs.start_server()
        running = client.submit_job(thousand_frame_video, "paced")
        wait_for_job(client, running.id, is_running_with_frames(1))
        incoming = jobs.settings.data_dir / "uploads" / "incoming"
        uploading, release = threading.Event(), threading.Event()

        def held_after_its_first_chunk(_sent: int, _total: int | None) -> None:
            uploading.set()
            assert release.wait(60)

        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(client.submit_job, make_video(30), "frame_stats_v1", chunk_size=4096,
                                on_upload_progress=held_after_its_first_chunk)
            assert uploading.wait(30)
            wait_until(lambda: any(incoming.iterdir()), timeout=30, what="the first upload to be under way")
            try:
                with pytest.raises(ResourceExhausted) as full:
                    client.submit_job(make_video(3), "frame_stats_v1")
            finally:
                release.set()
            queued = first.result(timeout=60)
        assert full.value.reason == "TOO_MANY_QUEUED_JOBS"
        assert full.value.message == ("the server already holds 1 job waiting for a worker (1 of them still "
                                      "uploading), its maximum of 1; retry later")
        assert queued.state is JobState.QUEUED
        # Its upload done and its job queued, it counts once, as a queued job.
        with pytest.raises(ResourceExhausted, match="holds 1 job waiting for a worker, its maximum of 1"):
            client.submit_job(make_video(3), "frame_stats_v1")
        client.cancel_job(queued.id)
        client.cancel_job(running.id)


def test_a_job_on_a_video_cut_short_says_it_ended_early(
    client: VideodagClient, sample_clip: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(sample_clip.read_bytes()[:400_000])
    final = wait_for_job(client, client.submit_job(cut, "frame_stats_v1").id, finished)
    assert final.state is JobState.SUCCEEDED
    assert isinstance(final.summary, RunSummary) and final.summary.ended_early
    assert 10 < final.summary.frames_processed < 110


def test_a_full_queue_refuses_new_jobs_with_a_retry_hint_and_stores_nothing(
    backend: str, tmp_path: Path, make_video, thousand_frame_video: Path
) -> None:
    """A backlog that only grew was stored job after job until the disk's reserve stopped it."""
    with deployment(backend, tmp_path, max_queued_jobs=1) as jobs:
        client = jobs.start_server()
        running = client.submit_job(thousand_frame_video, "paced")
        wait_for_job(client, running.id, is_running_with_frames(1))
        queued = client.submit_job(make_video(3), "frame_stats_v1", idempotency_key="queued")
        stored = jobs.stored_uploads()
        with pytest.raises(ResourceExhausted) as full:
            client.submit_job(make_video(3), "frame_stats_v1")
        assert full.value.reason == "TOO_MANY_QUEUED_JOBS"
        assert full.value.metadata == {"max_queued_jobs": "1"}
        assert full.value.retry_after == 30.0
        assert full.value.message == ("the server already holds 1 job waiting for a worker, its maximum of 1; "
                                      "retry later")
        assert jobs.stored_uploads() == stored
        # A retry of a job already queued still finds it.
        assert client.submit_job(make_video(3), "frame_stats_v1", idempotency_key="queued").id == queued.id
        client.cancel_job(queued.id)
        client.cancel_job(running.id)
