"""A job's run ended by the server's own passing trouble runs again, in the job's next attempt.

The troubles are those a caller of UploadAndRun is told to retry (UNAVAILABLE with a retry
hint): a decoder killed (the out-of-memory killer), threads, processes, memory or files short.
The video layer here is the real one, its run cut short by `_TroubledVideo` on the attempts a
test chooses, with the error the real layer raises then; the store is SQLite, the executor and
the worker threads real.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fakes.fake_plugins import counter_pipeline, dag_with_test_pipelines
from fakes.media import write_indexed_video
from fakes.waiting import wait_until
from videodag_service.dag import DagPipelineService
from videodag_service.errors import DecoderKilled, ErrorDetails, VideoFileMissing
from videodag_service.jobs import DirectoryUploadStorage, Job, JobExecutor, JobState, SqliteJobStore
from videodag_service.jobs import dispatch as dispatch_module
from videodag_service.jobs.dispatch import ThreadPoolJobQueue
from videodag_service.jobs.execution import run_again_pause
from videodag_service.jobs.ids import new_job_id
from videodag_service.jobs.model import JobFrame, RunClaim
from videodag_service.jobs.run_again import RunAgainTurns
from videodag_service.video import FrameProcessed, RunEvent, SamplingOptions, VideoFilePipelineService

FRAMES = 20
KILLED = DecoderKilled(
    "the decoder of 'clip.avi' was killed (SIGKILL), most likely by the system's out-of-memory killer; the video is "
    "not to blame: retry shortly, or with fewer runs at once",
    ErrorDetails(retry_after_seconds=5.0),
)


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> DagPipelineService:
    return dag_with_test_pipelines(tmp_path_factory.mktemp("pipelines"),
                                   {"paced.yaml": counter_pipeline("paced", delay_seconds=0.005),
                                    "slow.yaml": counter_pipeline("slow", delay_seconds=0.05),
                                    "crawling.yaml": counter_pipeline("crawling", delay_seconds=0.2)})


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("media") / "clip.avi", FRAMES, fps=25.0)


class _TroubledVideo(VideoFilePipelineService):
    """The real video layer, whose runs raise `troubles[n]` after 5 frames in the n-th run (none
    for runs past the list); `spans` has each run's video, start and end."""

    def __init__(self, dag: DagPipelineService, troubles: list[BaseException | None],
                 before: Callable[[], object] | None = None) -> None:
        super().__init__(dag)
        self.troubles = troubles
        self.runs = 0
        self.before = before  # called just before the trouble is raised
        self.spans: list[tuple[str, float, float]] = []
        self.untroubled: set[str] = set()  # videos whose runs are neither troubled nor counted
        self._lock = threading.Lock()

    def stream_run(self, *args: Any, **kwargs: Any) -> Generator[RunEvent, None, None]:
        video = Path(args[1]).name
        with self._lock:
            trouble = None
            if video not in self.untroubled:
                trouble = self.troubles[self.runs] if self.runs < len(self.troubles) else None
                self.runs += 1
        return self._cut_short(super().stream_run(*args, **kwargs), trouble, video)

    def _cut_short(self, events: Generator[RunEvent, None, None],
                   trouble: BaseException | None, video: str) -> Generator[RunEvent, None, None]:
        frames = 0
        started = time.monotonic()
        try:
            with closing(events):
                for event in events:
                    yield event
                    frames += isinstance(event, FrameProcessed)
                    if trouble is not None and frames == 5:
                        if self.before is not None:
                            self.before()
                        raise trouble
        finally:
            self.spans.append((video, started, time.monotonic()))

    def runs_of(self, job: Job) -> list[tuple[float, float]]:
        return [(start, end) for video, start, end in self.spans if video == job.video.ref]


class _Runs:
    """What a test reads of the runs' ends, as the server's metrics hear of them."""

    def __init__(self) -> None:
        self.ends: list[str] = []

    def record_run(self, pipeline_id: str, status: str) -> None:
        self.ends.append(status)

    def record_frame(self, pipeline_id: str, count: int = 1) -> None:
        pass

    def record_upload(self, pipeline_id: str, size_bytes: int) -> None:
        pass


class _Parts:
    def __init__(self, tmp_path: Path, video: VideoFilePipelineService, dag: DagPipelineService,
                 max_attempts: int = 3) -> None:
        self.store = SqliteJobStore(tmp_path / "data")
        self.uploads = DirectoryUploadStorage(tmp_path / "data" / "uploads")
        self.runs = _Runs()
        self.executor = JobExecutor(self.store, self.uploads, dag, video, job_timeout_seconds=60,
                                    retention_seconds=60, observer=self.runs, max_attempts=max_attempts)

    def submit(self, clip: Path, pipeline_id: str = "paced") -> Job:
        job_id = new_job_id()
        data = clip.read_bytes()
        video = self.uploads.store(lambda: job_id, iter([data]), max_upload_bytes=10**7, declared_size=None,
                                   declared_sha256=None, file_name=clip.name)
        return self.store.create(Job(job_id, JobState.QUEUED, pipeline_id, SamplingOptions(), video, 0.0))


@pytest.fixture
def parts_of(tmp_path: Path, dag: DagPipelineService) -> Iterator[Any]:
    made: list[_Parts] = []

    def make(troubles: list[BaseException | None], **options: Any) -> _Parts:
        parts = _Parts(tmp_path, _TroubledVideo(dag, troubles, options.pop("before", None)), dag, **options)
        made.append(parts)
        return parts

    yield make
    for parts in made:
        parts.store.close()


def killed_once(parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch, pause_seconds: float) -> tuple[_Parts, Job]:
    """A job whose first run will end DECODER_KILLED, its workers pausing `pause_seconds` before they run it again."""
    monkeypatch.setattr(dispatch_module, "run_again_pause", lambda ended_attempt: pause_seconds)
    parts = parts_of([KILLED])
    return parts, parts.submit(clip)


def test_a_killed_decoder_queues_the_job_in_its_next_attempt_without_its_results(parts_of: Any, clip: Path) -> None:
    parts = parts_of([KILLED])
    job = parts.submit(clip)

    assert parts.executor.execute(job.id, 1) is JobState.QUEUED

    queued = parts.store.get(job.id)
    assert (queued.state, queued.attempt, queued.frames_done, queued.error) == (JobState.QUEUED, 2, 0, None)
    assert parts.store.frames_after(job.id, None, 100) == [], "the next attempt runs from the first frame"
    assert list(parts.uploads.refs()) == [job.video.ref], "the video stays for it"
    assert parts.runs.ends == ["UNAVAILABLE"], "the run that failed is counted as it ended"
    assert parts.executor.execute(job.id, 1) is None, "the attempt that failed is not claimed again"

    assert parts.executor.execute(job.id, 2) is JobState.SUCCEEDED
    done = parts.store.get(job.id)
    assert (done.attempt, done.frames_done) == (2, FRAMES)
    assert [f.frame_index for f in parts.store.frames_after(job.id, None, 100)] == list(range(FRAMES))
    assert parts.runs.ends == ["UNAVAILABLE", "OK"]
    assert list(parts.uploads.refs()) == []


def test_a_thread_that_cannot_start_is_retried_as_the_servers_want_of_resources(parts_of: Any, clip: Path) -> None:
    parts = parts_of([RuntimeError("can't start new thread")])
    job = parts.submit(clip)

    assert parts.executor.execute(job.id, 1) is JobState.QUEUED
    assert (parts.store.get(job.id).state, parts.store.get(job.id).attempt) == (JobState.QUEUED, 2)
    assert parts.executor.execute(job.id, 2) is JobState.SUCCEEDED


def test_the_last_attempt_records_the_trouble_and_says_it_was_the_last(
    parts_of: Any, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="videodag_service.jobs")
    parts = parts_of([KILLED, KILLED, KILLED])
    job = parts.submit(clip)

    assert [parts.executor.execute(job.id, attempt) for attempt in (1, 2, 3)] == [
        JobState.QUEUED, JobState.QUEUED, JobState.FAILED]
    failures = [(record.levelname, record.getMessage()) for record in caplog.records if job.id in record.getMessage()
                and "failed" in record.getMessage()]
    assert [level for level, _ in failures] == ["WARNING"] * 3, "the server's trouble is the operator's, to the last"
    assert "failed in its last attempt (3 of 3) for the server's passing trouble (DECODER_KILLED" in failures[-1][1]

    failed = parts.store.get(job.id)
    assert failed.attempt == 3 and failed.error is not None
    assert (failed.error.status_code, failed.error.reason) == ("UNAVAILABLE", "DECODER_KILLED")
    assert failed.error.message == f"{KILLED.message} (the job's last attempt, 3 of 3)"
    assert dict(failed.error.metadata) == {"attempts": "3"}
    assert failed.error.retry_after_seconds == 5.0, "its caller may submit it again then"
    assert parts.runs.ends == ["UNAVAILABLE"] * 3
    assert list(parts.uploads.refs()) == [], "no attempt is left to need the video"


def test_an_attempt_the_store_could_not_queue_again_fails_the_job_and_is_not_logged_as_the_last(
    parts_of: Any, clip: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="videodag_service.jobs")
    parts = parts_of([KILLED])
    job = parts.submit(clip)

    def disk_failure(*_args: object) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(parts.store, "queue_next_attempt", disk_failure)
    assert parts.executor.execute(job.id, 1) is JobState.FAILED
    failed = parts.store.get(job.id)
    assert failed.error is not None and failed.error.message == KILLED.message, "not its last attempt's"
    [(level, message)] = [(record.levelname, record.getMessage()) for record in caplog.records
                          if f"job {job.id} failed" in record.getMessage()]
    assert level == "WARNING"
    assert "failed in attempt 1 of 3 for the server's passing trouble (DECODER_KILLED" in message
    assert "which the job store could not queue again" in message


def test_a_job_with_one_attempt_fails_at_its_first_trouble(parts_of: Any, clip: Path) -> None:
    parts = parts_of([KILLED], max_attempts=1)
    job = parts.submit(clip)

    assert parts.executor.execute(job.id, 1) is JobState.FAILED
    error = parts.store.get(job.id).error
    assert error is not None and error.reason == "DECODER_KILLED"
    assert error.message.endswith("(the job's last attempt, 1 of 1)")


def test_a_trouble_a_run_again_cannot_mend_fails_the_job_at_once(
    parts_of: Any, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored video gone is UNAVAILABLE too, for a caller who still has it; the job has not."""
    caplog.set_level(logging.INFO, logger="videodag_service.jobs")
    missing = VideoFileMissing("the server's copy of 'clip.avi' was removed before it was decoded")
    parts = parts_of([missing])
    job = parts.submit(clip)

    assert parts.executor.execute(job.id, 1) is JobState.FAILED
    assert [record.levelname for record in caplog.records if f"job {job.id} failed" in record.getMessage()] == ["INFO"]
    failed = parts.store.get(job.id)
    assert failed.attempt == 1 and failed.error is not None
    assert (failed.error.reason, failed.error.message) == ("VIDEO_FILE_MISSING", missing.message)


def test_a_job_cancelled_as_its_run_met_the_trouble_stays_cancelled(parts_of: Any, clip: Path) -> None:
    cancel: list[Callable[[], object]] = []
    parts = parts_of([KILLED], before=lambda: cancel[0]())
    job = parts.submit(clip)
    cancel.append(lambda: parts.store.cancel(job.id, 1.0, 60.0))

    assert parts.executor.execute(job.id, 1) is JobState.CANCELLED
    assert (parts.store.get(job.id).state, parts.store.get(job.id).attempt) == (JobState.CANCELLED, 1)
    assert parts.runs.ends == ["CANCELLED"]
    assert list(parts.uploads.refs()) == []


def test_the_workers_run_a_job_queued_again_once_its_pause_is_over(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="videodag_service.jobs")
    parts, job = killed_once(parts_of, clip, monkeypatch, pause_seconds=1.0)
    workers = ThreadPoolJobQueue(parts.executor, 1)
    try:
        workers.dispatch(job)
        assert wait_until(lambda: parts.store.get(job.id).state is JobState.SUCCEEDED, timeout=30)
    finally:
        workers.close()

    def logged_at(text: str) -> float:
        [record] = [record for record in caplog.records if text in record.getMessage()]
        return record.created

    queued_again = logged_at("it runs again from the start as attempt 2")
    assert logged_at(f"job {job.id} attempt 2 started") - queued_again >= 1.0, "not before the pause is over"
    assert parts.store.get(job.id).attempt == 2


def test_a_stop_during_the_pause_leaves_the_job_queued_for_the_next_start(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, job = killed_once(parts_of, clip, monkeypatch, pause_seconds=60.0)
    workers = ThreadPoolJobQueue(parts.executor, 1)
    workers.dispatch(job)
    assert wait_until(lambda: parts.store.get(job.id).attempt == 2)
    assert workers.wait_until_idle(10), "a worker waiting out the pause runs no job: a drain need not wait"

    workers.close(timeout=10)

    assert not any(thread.is_alive() for thread in workers._threads), "the stop ends the pause"
    assert (parts.store.get(job.id).state, parts.store.get(job.id).attempt) == (JobState.QUEUED, 2)
    assert list(parts.uploads.refs()) == [job.video.ref], "its video stays for the next start"


def test_the_workers_run_again_a_job_whose_results_the_store_lost(
    tmp_path: Path, dag: DagPipelineService, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued again in the same attempt, rather than succeed with holes: it waited for a restart."""
    monkeypatch.setattr(dispatch_module, "run_again_pause", lambda ended_attempt: 0.5)
    parts = _Parts(tmp_path, VideoFilePipelineService(dag), dag)
    job = parts.submit(clip)
    store_append = parts.store.append_frame
    lost: list[int] = []

    def append_losing_frame_3_once(run: RunClaim, frame: JobFrame) -> bool:
        if frame.frame_index == 3 and not lost:
            lost.append(3)
            return True  # taken, then lost
        return store_append(run, frame)

    parts.store.append_frame = append_losing_frame_3_once  # type: ignore[method-assign]
    workers = ThreadPoolJobQueue(parts.executor, 1)
    try:
        workers.dispatch(job)
        assert wait_until(lambda: parts.store.get(job.id).state is JobState.SUCCEEDED, timeout=30)
        assert lost == [3]
        assert [f.frame_index for f in parts.store.frames_after(job.id, None, 100)] == list(range(FRAMES))
        assert parts.store.get(job.id).attempt == 1
    finally:
        workers.close()
        parts.store.close()


def test_a_job_the_store_would_not_tell_after_the_pause_is_handed_over_at_the_next_maintenance(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, job = killed_once(parts_of, clip, monkeypatch, pause_seconds=0.1)
    read = parts.executor.queued_attempt
    failures = [sqlite3.OperationalError("disk I/O error (injected)")]

    def read_failing_once(job_id: str) -> int | None:
        if failures:
            raise failures.pop()
        return read(job_id)

    parts.executor.queued_attempt = read_failing_once  # type: ignore[method-assign]
    workers = ThreadPoolJobQueue(parts.executor, 1)
    try:
        workers.dispatch(job)
        assert wait_until(lambda: not failures and workers.wait_until_idle(0))
        assert parts.store.get(job.id).state is JobState.QUEUED, "not lost, not run yet"

        def retried_until_it_ran() -> bool:
            # What maintenance does, at every pass: the worker records the job for it just after
            # the failed read, so a single call made then could come a moment too early.
            workers.retry_stranded()
            return parts.store.get(job.id).state is JobState.SUCCEEDED

        assert wait_until(retried_until_it_ran, timeout=30)
    finally:
        workers.close()


def test_the_pause_grows_with_each_attempt_and_differs_from_job_to_job() -> None:
    """Two jobs whose decoders one memory limit killed at once ran again at once, and met it again."""
    after_first = [run_again_pause(1) for _ in range(50)]
    after_second = [run_again_pause(2) for _ in range(50)]
    assert all(2.5 <= pause <= 7.5 for pause in after_first)
    assert all(7.5 <= pause <= 22.5 for pause in after_second)
    assert len(set(after_first)) == 50


def test_jobs_their_runs_queued_again_run_again_one_after_the_other(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two large videos' decoders killed at once at a memory limit: side by side again, they met
    it in every attempt and both jobs failed, where each fits alone. C, another job, runs on."""
    monkeypatch.setattr(dispatch_module, "run_again_pause", lambda ended_attempt: 0.1)
    parts = parts_of([KILLED, KILLED])
    video: _TroubledVideo = parts.executor._video  # type: ignore[assignment]
    a, b, c = parts.submit(clip, "slow"), parts.submit(clip, "slow"), parts.submit(clip, "crawling")
    video.untroubled = {c.video.ref}
    workers = ThreadPoolJobQueue(parts.executor, 3)
    try:
        for job in (a, b, c):
            workers.dispatch(job)
        assert wait_until(lambda: all(parts.store.get(job.id).state is JobState.SUCCEEDED for job in (a, b, c)),
                          timeout=60)
    finally:
        workers.close()

    [_, a_again], [_, b_again], [c_run] = (video.runs_of(job) for job in (a, b, c))
    first, second = sorted([a_again, b_again])
    assert first[1] <= second[0], "one after the other"
    assert c_run[0] < first[1] and first[0] < c_run[1], "beside the job that was not queued again"


def waiting_for_its_turn(parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch,
                         workers: int) -> tuple[_Parts, ThreadPoolJobQueue, Job, Job]:
    """Two slow jobs (4 s a run) whose first runs were killed at once: one runs again, the other waits its turn."""
    monkeypatch.setattr(dispatch_module, "run_again_pause", lambda ended_attempt: 0.1)
    parts = parts_of([KILLED, KILLED])
    a, b = parts.submit(clip, "crawling"), parts.submit(clip, "crawling")
    queue = ThreadPoolJobQueue(parts.executor, workers)
    queue.dispatch(a)
    queue.dispatch(b)

    roles: list[tuple[Job, Job]] = []

    def one_runs_again_and_one_waits() -> bool:
        """Whether one job runs again and the other waits, and which, from one reading of each:
        read again afterwards, the one running again may have ended meanwhile on a loaded machine."""
        read = {job.id: parts.store.get(job.id) for job in (a, b)}
        if {(job.state, job.attempt) for job in read.values()} != {(JobState.RUNNING, 2), (JobState.QUEUED, 2)}:
            return False
        roles.append((a, b) if read[a.id].state is JobState.RUNNING else (b, a))
        return True

    assert wait_until(one_runs_again_and_one_waits)
    running, waiting = roles[0]
    return parts, queue, running, waiting


def test_a_job_waiting_its_turn_holds_no_worker(parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker whose run queued the job again waited for its turn: behind a long run again,
    the jobs handed over meanwhile waited too, for as long."""
    parts, workers, running, waiting = waiting_for_its_turn(parts_of, clip, monkeypatch, workers=2)
    video: _TroubledVideo = parts.executor._video  # type: ignore[assignment]
    try:
        other = parts.submit(clip)
        video.untroubled = {other.video.ref}
        workers.dispatch(other)
        assert wait_until(lambda: all(parts.store.get(job.id).state is JobState.SUCCEEDED
                                      for job in (other, running, waiting)), timeout=60)
    finally:
        workers.close()
    [(other_started, _)] = video.runs_of(other)
    assert other_started < video.runs_of(running)[1][1], "run while the job run again still ran"
    first, second = sorted([video.runs_of(running)[1], video.runs_of(waiting)[1]])
    assert first[1] <= second[0], "the jobs run again one after the other all the same"


def test_a_job_cancelled_while_it_waits_its_turn_is_not_run_again(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, workers, running, waiting = waiting_for_its_turn(parts_of, clip, monkeypatch, workers=2)
    video: _TroubledVideo = parts.executor._video  # type: ignore[assignment]
    try:
        parts.store.cancel(waiting.id, 1.0, 60.0)
        assert wait_until(lambda: parts.store.get(running.id).state is JobState.SUCCEEDED, timeout=30)
        assert workers.wait_until_idle(10)
    finally:
        workers.close()
    assert len(video.runs_of(waiting)) == 1, "not run again"
    assert parts.store.get(waiting.id).state is JobState.CANCELLED


def test_a_stop_while_a_job_waits_its_turn_leaves_it_queued(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, workers, running, waiting = waiting_for_its_turn(parts_of, clip, monkeypatch, workers=2)

    workers.close(timeout=10)

    assert not any(thread.is_alive() for thread in workers._threads)
    for job in (running, waiting):  # the one running queued again in its attempt, as by any stop
        assert (parts.store.get(job.id).state, parts.store.get(job.id).attempt) == (JobState.QUEUED, 2)


def test_turns_go_to_jobs_whose_pause_is_over_one_at_a_time_in_the_order_their_pauses_end() -> None:
    turns = RunAgainTurns()
    assert (turns.take(), turns.seconds_to_next()) == (None, None)
    turns.add("late", 0.2)
    turns.add("early", 0.0)
    assert turns.take() == "early"
    assert (turns.take(), turns.seconds_to_next()) == (None, None), "one at a time: its worker looks again"
    turns.done()
    waited = turns.seconds_to_next()
    assert waited is not None and 0 < waited <= 0.2
    assert turns.take() is None, "not before its pause is over"
    assert wait_until(lambda: turns.take() == "late", timeout=5)


def test_a_draining_queue_waits_for_its_stop_without_spinning_over_a_job_due_to_run_again(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose pause was over gave each idle worker a wait of 0: they spun at full CPU for the
    whole drain, slowing the runs it waits for."""
    monkeypatch.setattr(dispatch_module, "run_again_pause", lambda ended_attempt: 0.1)
    parts = parts_of([KILLED])
    video: _TroubledVideo = parts.executor._video  # type: ignore[assignment]
    job, long_one = parts.submit(clip), parts.submit(clip, "crawling")
    video.untroubled = {long_one.video.ref}
    workers = ThreadPoolJobQueue(parts.executor, 2)
    try:
        workers.dispatch(long_one)
        workers.dispatch(job)
        assert wait_until(lambda: parts.store.get(job.id).attempt == 2)
        workers.stop_taking()
        time.sleep(0.3)  # its pause is over
        looks = 0
        get = workers._pending.get

        def counted_get(*args: Any, **kwargs: Any) -> tuple[str, int] | None:
            nonlocal looks
            looks += 1
            return get(*args, **kwargs)

        workers._pending.get = counted_get  # type: ignore[method-assign]
        time.sleep(0.5)
        assert looks <= 4, f"{looks} looks at the pending jobs in 0.5 s of drain"
        assert parts.store.get(job.id).state is JobState.QUEUED, "not run again while draining"
    finally:
        workers.close()


def test_the_depth_of_a_queue_counts_the_jobs_waiting_to_run_again(
    parts_of: Any, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, job = killed_once(parts_of, clip, monkeypatch, pause_seconds=60.0)
    workers = ThreadPoolJobQueue(parts.executor, 1)
    try:
        workers.dispatch(job)
        assert wait_until(lambda: parts.store.get(job.id).attempt == 2 and workers.wait_until_idle(0))
        assert wait_until(lambda: workers.depth() == 1)
        time.sleep(0.2)
        assert workers.depth() == 1
    finally:
        workers.close()
