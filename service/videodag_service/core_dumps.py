"""Core dumps off in the processes that hold callers' videos and results.

A crash's core dump is a copy of the process's memory: frames, results, an upload's bytes,
tokens. It goes where the machine's settings say (a file in the working folder, or
systemd-coredump's store), outlives the job's retention and DeleteJob, and is readable by
whoever reads crash reports there. Decoder processes turn them off for good; the server and the
RQ work horses lower the soft limit only, so that an operator chasing a crash can raise it again
(`prlimit --core=unlimited --pid PID`).
"""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger(__name__)


def turn_off_core_dumps() -> None:
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (OSError, ValueError) as error:
        logger.warning("could not turn core dumps off (they would hold the videos and results in memory): %s", error)
