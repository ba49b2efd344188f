"""`JobQueue`: how a queued job reaches a worker; and the embedded one, a bounded pool of threads.

A queue only carries (job id, attempt) pairs: the job itself is in the store, and a worker
that receives a stale pair (the job was cancelled, or re-queued in a later attempt) finds it
no longer claimable and skips it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from videodag_service.jobs.execution import JobExecutor, JobInterrupted, run_again_pause
from videodag_service.jobs.model import HandOver, Job, JobState
from videodag_service.scheduling import run_as_batch

logger = logging.getLogger(__name__)

# How often a worker waiting for its turn to run a job again looks whether the job still waits.
_TURN_LOOK_SECONDS = 5.0


class JobQueue(Protocol):
    """Hands queued jobs to workers."""

    def dispatch(self, job: Job) -> None:
        """Have a worker run `job` in its current attempt, once one is free."""
        ...

    def stop_taking(self) -> None:
        """Start no further job in this process (the server is draining); running ones go on."""
        ...

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the jobs running in this process; True if none is left."""
        ...

    def close(self) -> None:
        """Stop handing out jobs; jobs running in this process are interrupted and queued again."""
        ...

    def depth(self) -> int:
        """Jobs handed to the queue that no worker has started yet (for the queue-depth metric)."""
        ...

    def retry_stranded(self) -> None:
        """Try again what a store failure left undone in this process (called by maintenance)."""
        ...

    def lost_hand_overs(self, hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        """Of these jobs, handed over a while ago and claimed by no worker since, those the queue no
        longer holds for a worker: its worker died, or its run ended, before the claim (recovery
        hands them over again)."""
        ...


class ThreadPoolJobQueue:
    """`workers` threads run jobs one at a time each, in the order they were dispatched.

    The pending list is in memory only; that is safe because the store is the record: after
    a restart, recovery dispatches every QUEUED job again.

    A job its run queued again (the server's passing trouble: a decoder killed, memory or
    threads short; see `JobExecutor`) runs again by the worker whose run it was, after the pause
    (`run_again_pause`), and one at a time with the other jobs run again so: a memory limit met by
    two large videos killed both decoders, and run again side by side they met it again until
    both jobs had used up their attempts, where one after the other both succeed. The other
    workers go on with the jobs they take.
    """

    def __init__(self, executor: JobExecutor, workers: int, queued_count: Callable[[], int] | None = None) -> None:
        """`queued_count`: the store's count of QUEUED jobs, which `depth` reports when given:
        a job cancelled while it waits stays in the pending list until a worker skips it."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._executor = executor
        self._queued_count = queued_count
        self._pending: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._not_taking = threading.Event()
        self._running_jobs: dict[int, tuple[str, int]] = {}  # by worker thread
        self._running_changed = threading.Condition()
        self._running_again = False  # under `_running_changed`: whether a worker runs a job its run queued again
        self._unstarted_lock = threading.Lock()
        self._unstarted: list[tuple[str, int]] = []
        self._queued_again: list[str] = []  # jobs queued again whose attempt the store would not tell
        self._threads = [
            threading.Thread(target=self._work, name=f"videodag-job-{number}", daemon=True)
            for number in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def dispatch(self, job: Job) -> None:
        if self._stopping.is_set():
            return  # the job stays QUEUED in the store; the next start runs it
        self._pending.put((job.id, job.attempt))

    def depth(self) -> int:
        return self._pending.qsize() if self._queued_count is None else self._queued_count()

    def retry_stranded(self) -> None:
        """Record the job ends the store refused, and hand the jobs it would not let start to
        the workers again (a stale pair is skipped by the worker, as ever); so too the jobs their
        runs queued again whose attempt the store would not tell after the pause."""
        self._executor.record_pending_ends()
        with self._unstarted_lock:
            unstarted, self._unstarted = self._unstarted, []
            queued_again, self._queued_again = self._queued_again, []
        for item in unstarted:
            if not self._stopping.is_set():
                self._pending.put(item)
        for job_id in queued_again:
            self._hand_over_again(job_id)

    def _hand_over_again(self, job_id: str) -> None:
        """Hand the job over in the attempt it waits in, if it still waits (not cancelled meanwhile)."""
        if not self._stopping.is_set() and (attempt := self._attempt_waited_in(job_id)) is not None:
            self._pending.put((job_id, attempt))

    def _attempt_waited_in(self, job_id: str) -> int | None:
        """The attempt the job its run queued again waits in; None when it no longer waits
        (cancelled, deleted), or the store failed to tell: the next maintenance asks again."""
        try:
            return self._executor.queued_attempt(job_id)
        except Exception:  # the store failing for a moment
            logger.warning("job %s: could not read it to run it again; trying again later", job_id, exc_info=True)
            with self._unstarted_lock:
                self._queued_again.append(job_id)
            return None

    def lost_hand_overs(self, hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        """None: a pair is lost only with this process, whose next start hands every QUEUED job
        over again, or by a store failure before its claim, which `retry_stranded` makes good."""
        return ()

    def stop_taking(self) -> None:
        """Jobs handed out but not started stay QUEUED in the store: the next start runs them."""
        self._not_taking.set()
        with self._running_changed:  # wakes the workers waiting for their turn to run a job again
            self._running_changed.notify_all()

    def wait_until_idle(self, timeout: float) -> bool:
        with self._running_changed:
            return self._running_changed.wait_for(lambda: not self._running_jobs, timeout=max(0.0, timeout))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers; a job one is still running `timeout` seconds on is queued again from here.

        A run stops at its next frame, which a node call as long as the node time limit can
        put a minute away: the store was closed under such a run, whose own release then
        failed, and the next start counted the clean stop as a crash, an attempt of the job's.
        """
        self._not_taking.set()
        self._stopping.set()
        with self._running_changed:  # wakes the workers waiting for their turn to run a job again
            self._running_changed.notify_all()
        for _ in self._threads:
            self._pending.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._running_changed:
            still_running = list(self._running_jobs.values())
        for job_id, attempt in still_running:
            if self._executor.release_from_outside(job_id, attempt):
                logger.warning("job %s attempt %d did not stop within %g s of being told to (a long node call?): "
                               "queued again from here", job_id, attempt, timeout)

    def _work(self) -> None:
        run_as_batch()  # a job is frame work; serving calls goes first
        while True:
            item = self._pending.get()
            if item is None or self._stopping.is_set():
                return
            if self._not_taking.is_set():
                continue  # draining: the job stays QUEUED for the next start
            try:
                self._run_until_done(*item)
            except JobInterrupted:
                return

    def _run_until_done(self, job_id: str, attempt: int) -> None:
        """Run the job's attempt, and again in turn after the pause while its runs queue it again."""
        state = self._run(job_id, attempt)
        while state is JobState.QUEUED:
            next_attempt = self._turn_to_run_again(job_id, attempt)
            if next_attempt is None:
                return
            attempt = next_attempt
            logger.info("job %s runs again (attempt %d)", job_id, attempt)
            try:
                state = self._run(job_id, attempt)
            finally:
                with self._running_changed:
                    self._running_again = False
                    self._running_changed.notify_all()

    def _run(self, job_id: str, attempt: int) -> JobState | None:
        try:
            with self._counted_as_running(job_id, attempt):
                return self._executor.execute(job_id, attempt, should_stop=self._stopping.is_set)
        except JobInterrupted:
            raise
        except Exception:
            # The executor records run errors in the job; what reaches here is a store
            # failure before the job was claimed: it is still QUEUED, and goes back to
            # the workers at the next maintenance.
            logger.exception("job %s attempt %d: could not be started; trying again later", job_id, attempt)
            with self._unstarted_lock:
                self._unstarted.append((job_id, attempt))
            return None

    def _turn_to_run_again(self, job_id: str, ended_attempt: int) -> int | None:
        """After the pause, once no other job its run queued again runs here, the attempt the job
        waits in, this worker's to run: None when it no longer waits (cancelled, deleted; looked
        at every few seconds while another runs), when a stop or a drain came meanwhile (it stays
        QUEUED for the next start), or when the store failed to tell (maintenance hands it over)."""
        if self._stopping.wait(run_again_pause(ended_attempt)):
            return None
        while not self._not_taking.is_set():
            if (attempt := self._attempt_waited_in(job_id)) is None:
                return None
            with self._running_changed:
                if self._not_taking.is_set():
                    return None
                if not self._running_again:
                    self._running_again = True
                    return attempt
                self._running_changed.wait(_TURN_LOOK_SECONDS)
        return None

    @contextmanager
    def _counted_as_running(self, job_id: str, attempt: int) -> Iterator[None]:
        worker = threading.get_ident()
        with self._running_changed:
            self._running_jobs[worker] = (job_id, attempt)
        try:
            yield
        finally:
            with self._running_changed:
                del self._running_jobs[worker]
                self._running_changed.notify_all()
