"""The thread pool gRPC's server runs calls on, made to outlive a process out of threads.

gRPC's synchronous server hands every call to this pool from its one serving thread, and the
pool starts a thread for the call when none is idle. At a container's pids limit (or with no
memory for a stack) that start raises, in the serving thread, which died of it: the process
lived on, but answered no call again, health checks included, until it was killed.
"""

from __future__ import annotations

import logging
from concurrent import futures

logger = logging.getLogger(__name__)


class RpcThreadPool(futures.ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose `submit` never fails for want of a new thread: the call
    waits in the pool's queue for a thread of the pool to come free, as it would at the pool's
    size, and the next submission tries to start one again."""

    def _adjust_thread_count(self) -> None:
        try:
            super()._adjust_thread_count()
        except RuntimeError as error:  # "can't start new thread"
            logger.warning("no thread could be started for a call (%s): it waits for one of the %d running",
                           error, len(self._threads))
