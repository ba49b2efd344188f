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
from videodag_service.jobs.run_again import RunAgainTurns
from videodag_service.scheduling import run_as_batch

logger = logging.getLogger(__name__)

# Put in the pending list to wake a worker waiting for work: the list of jobs to run again changed.
_LOOK_AGAIN = ("", 0)


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

    A job its run queued again (the server's passing trouble) runs again after a pause, one at
    a time with the other jobs queued again so (`RunAgainTurns`), taken by any worker looking for
    work once its turn has come, before the jobs handed over since.
    """

    def __init__(self, executor: JobExecutor, workers: int, queued_count: Callable[[], int] | None = None) -> None:
        """`queued_count`: the store's count of QUEUED jobs, which `depth` reports when given:
        a job cancelled while it waits stays in the pending list until a worker skips it."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._executor = executor
        self._queued_count = queued_count
        self._pending: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._not_taking = threading.Event()
        self._running_jobs: dict[int, tuple[str, int]] = {}  # by worker thread
        self._running_changed = threading.Condition()
        self._run_again = RunAgainTurns()
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
        if self._queued_count is not None:
            return self._queued_count()
        with self._pending.mutex:
            handed_over = sum(1 for item in self._pending.queue if item is not None and item != _LOOK_AGAIN)
        return handed_over + len(self._run_again)

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

    def _hand_over_again(self, job_id: str, pause_seconds: float = 0.0) -> None:
        """List the job its run queued again for its turn to run again, after `pause_seconds`."""
        self._run_again.add(job_id, pause_seconds)
        self._wake_the_idle()

    def _wake_the_idle(self) -> None:
        """Have the workers waiting for work look at the jobs to run again: how long each waits
        depends on them. Those busy meet the call later, and go on."""
        for _ in self._threads:
            self._pending.put(_LOOK_AGAIN)

    def _attempt_waited_in(self, job_id: str) -> int | None:
        """The attempt the job its run queued again waits in; None when it no longer waits
        (cancelled, deleted), or the store failed to tell: the next maintenance asks again."""
        try:
            return self._executor.queued_attempt(job_id)
        except Exception:  # the store failing for a moment
            with self._unstarted_lock:  # before the word of it: a maintenance pass from then on finds it
                self._queued_again.append(job_id)
            logger.warning("job %s: could not read it to run it again; trying again later", job_id, exc_info=True)
            return None

    def lost_hand_overs(self, hand_overs: Sequence[HandOver]) -> Collection[HandOver]:
        """None: a pair is lost only with this process, whose next start hands every QUEUED job
        over again, or by a store failure before its claim, which `retry_stranded` makes good."""
        return ()

    def stop_taking(self) -> None:
        """Jobs handed out but not started stay QUEUED in the store: the next start runs them."""
        self._not_taking.set()

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
            if not self._not_taking.is_set() and (job_id := self._run_again.take()) is not None:
                try:
                    self._run_in_turn(job_id)
                except JobInterrupted:
                    return
                continue
            # Draining, no job is run again here: a due one's wait of 0 would spin until the stop.
            wait = None if self._not_taking.is_set() else self._run_again.seconds_to_next()
            try:
                item = self._pending.get(timeout=wait)
            except queue.Empty:
                continue  # a job's turn to run again has come
            if item is None or self._stopping.is_set():
                return
            if self._not_taking.is_set() or item == _LOOK_AGAIN:
                continue  # draining: the job stays QUEUED for the next start
            try:
                self._run(*item)
            except JobInterrupted:
                return

    def _run_in_turn(self, job_id: str) -> None:
        """Run again, in the attempt it waits in, the job whose turn has come, if it still waits."""
        try:
            if (attempt := self._attempt_waited_in(job_id)) is not None:
                logger.info("job %s runs again (attempt %d)", job_id, attempt)
                self._run(job_id, attempt)
        finally:
            self._run_again.done()
            if self._run_again.seconds_to_next() is not None:  # the next may go
                self._wake_the_idle()

    def _run(self, job_id: str, attempt: int) -> None:
        try:
            with self._counted_as_running(job_id, attempt):
                state = self._executor.execute(job_id, attempt, should_stop=self._stopping.is_set)
        except JobInterrupted:
            raise
        except Exception:
            # The executor records run errors in the job; what reaches here is a store
            # failure before the job was claimed: it is still QUEUED, and goes back to
            # the workers at the next maintenance.
            with self._unstarted_lock:  # before the word of it: a maintenance pass from then on finds it
                self._unstarted.append((job_id, attempt))
            logger.exception("job %s attempt %d: could not be started; trying again later", job_id, attempt)
            return
        if state is JobState.QUEUED:  # its run queued it again
            self._hand_over_again(job_id, run_again_pause(attempt))

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
