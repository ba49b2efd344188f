"""Frame work runs under Linux's batch policy, so the thread that sets a run's pace keeps its core.

With a cheap pipeline the pace is set by one thread: the decoder's, which converts each
frame to BGR itself (OpenCV does it in the thread that asks for the frame, about 1 ms at
720p) while FFmpeg's worker threads decode the frames after it. Under the default policy
every wake-up of another thread preempts the thread running on that core: an FFmpeg worker
handed a packet, the server's run thread handed a frame, a node thread handed its inputs.
A thread under `SCHED_BATCH` does not preempt on wake-up; it waits for the running thread
to block or use up its slice. Its share of the CPU and its nice value are unchanged.

Measured on 2 cores (`frame_stats_v1`, the benchmark's 720p clip, 8 runs each side by side):
with the decoder process, the run threads and the node threads under batch, the median
rate is 576-582 frames a second, against 542 under the default policy; the 768x576 sample
clip (120 frames, where the start-up dominates) and `player_tracking_v1` run the same either
way. The threads that serve calls (gRPC's, health checks, uploads) keep the default policy,
so they still preempt frame work and answer promptly on a busy server.

Any thread may switch itself between the default and the batch policy without privileges.
Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def run_as_batch() -> None:
    """Put the calling thread under `SCHED_BATCH`; the threads it starts from now on inherit it.

    Does nothing where the policy does not exist. A refusal (a seccomp profile that forbids
    the call, say) is logged and ignored: it costs speed only.
    """
    set_scheduler = getattr(os, "sched_setscheduler", None)
    batch = getattr(os, "SCHED_BATCH", None)
    if set_scheduler is None or batch is None:
        return
    try:
        set_scheduler(0, batch, os.sched_param(0))  # 0: the calling thread, on Linux
    except OSError as error:
        logger.debug("frame work keeps the default scheduling policy: %s", error)
