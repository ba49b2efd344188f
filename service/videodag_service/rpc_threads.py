"""The thread pool gRPC's server runs calls on, made to outlive a process out of threads.

gRPC's synchronous server hands every call to this pool from its one serving thread, and the
pool starts a thread for the call when none is idle. At a container's pids limit (or with no
memory for a stack) that start raises, in the serving thread, which died of it: the process
lived on, but answered no call again, health checks included, until it was killed.
"""

from __future__ import annotations

import logging
import threading
import time
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
        threading.Thread(target=self._start_owed_threads, name=f"{thread_name_prefix}-starter", daemon=True).start()

    def _adjust_thread_count(self) -> None:
        # Called with the pool's lock held, by `submit` and by `_start_owed_threads`.
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

    def _start_owed_threads(self) -> None:
        while True:
            self._start_owed.wait()
            time.sleep(START_RETRY_SECONDS)
            with self._shutdown_lock:
                if self._shutdown:
                    return
                if not self._work_queue.empty():
                    try:
                        super()._adjust_thread_count()
                    except RuntimeError:
                        continue  # still owed, said once already
                if self._work_queue.empty():  # every waiting call was taken
                    self._start_owed.clear()
