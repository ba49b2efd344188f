"""The thread pool gRPC's server runs calls on, made to outlive a process out of threads.

gRPC's synchronous server hands every call to this pool from its one serving thread, and the
pool starts a thread for the call when none is idle. At a container's pids limit (or with no
memory for a stack) that start raises, in the serving thread; let out of `submit`, as a plain
`ThreadPoolExecutor` lets it, the error kills that thread: the process lives on, but answers
no call again, health checks included, until it is killed.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent import futures

logger = logging.getLogger(__name__)

# How often a thread is asked for again while calls wait for one.
START_RETRY_SECONDS = 0.5


class RpcThreadPool(futures.ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose `submit` never fails for want of a new thread: the call
    waits in the pool's queue, and a thread of the pool's own, started with it, asks for a
    thread again every `START_RETRY_SECONDS` until the calls waiting are taken. Without it a
    call could wait for good: with no thread of the pool running yet, or all held by long
    streams, none would come free to take it."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._start_owed = threading.Event()
        # The starter holds the pool weakly, as the pool's own threads do: the pool (which gRPC
        # never shuts down) and its threads go once the server that used it is gone.
        owed = self._start_owed
        pool = weakref.ref(self, lambda _: owed.set())
        threading.Thread(target=_start_owed_threads, args=(pool, owed), name=f"{thread_name_prefix}-starter",
                         daemon=True).start()

    def _adjust_thread_count(self) -> None:
        # Called with the pool's lock held, by `submit` and by `start_owed_thread`.
        try:
            super()._adjust_thread_count()
        except RuntimeError as error:  # "can't start new thread"
            if not self._start_owed.is_set():
                logger.warning("no thread could be started for a call (%s): it waits, with any that follow, "
                               "until one can be started or one of the %d running comes free",
                               error, len(self._threads))
            self._start_owed.set()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._start_owed.set()  # wakes the starter, which finds the pool shut down and ends

    def start_owed_thread(self) -> bool:
        """Ask for a thread again for the calls waiting; False once the pool is shut down."""
        with self._shutdown_lock:
            if self._shutdown:
                return False
            if not self._work_queue.empty():
                try:
                    super()._adjust_thread_count()
                except RuntimeError:
                    return True  # still owed, said once already
            if self._work_queue.empty():  # every waiting call was taken
                self._start_owed.clear()
            return True


def _start_owed_threads(pool: weakref.ref[RpcThreadPool], owed: threading.Event) -> None:
    while True:
        owed.wait()
        if pool() is None:  # woken by the pool's end: at once, not a retry later
            return
        time.sleep(START_RETRY_SECONDS)
        alive = pool()
        if alive is None or not alive.start_owed_thread():
            return
        del alive
