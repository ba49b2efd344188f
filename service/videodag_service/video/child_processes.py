"""Decoder processes whose exit status many threads may ask for at once, without misreads.

multiprocessing reads a child's exit status in the child's own thread, and also in any
thread that starts another child: `Process.start()` first polls every child of the
interpreter, as `multiprocessing.active_children()` does. Two threads reading one
forkserver child's status pipe misreport it: the loser reads the pipe's end and takes it
for a dead forkserver, 255. Worse, a thread that reads just after the owner has closed the
child (`Process.close()`) reads whatever descriptor took that number since: the pipe of a
run starting at that moment, whose messages it then eats (CPython gh-130895, open).

A decoder's `Popen` here reads its status and closes under a lock of its own, so a poll
from any thread is safe, and nothing that blocks holds it: a start stuck in a stopped
forkserver holds up nobody else's reaping. The lock is not reentrant, so nothing that may run
inside a poll (a finalizer the garbage collector calls) may poll or reap a decoder: finalizers
here only kill. Only forkserver children are guarded; spawn, used where there is no forkserver,
stays multiprocessing's own.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import threading
from multiprocessing import popen_forkserver
from multiprocessing.context import ForkServerProcess
from multiprocessing.process import BaseProcess
from typing import Any

_EXIT_CHECK_SECONDS = 0.1  # how often a blocking wait looks at the status while the child runs


class _GuardedStatus:
    """For a forkserver `Popen`: its exit status is read by one thread at a time, and never
    after its close; a blocking wait for it waits without the lock (once the pipe is readable,
    the status, or the forkserver's end, is there to read: the loop ends)."""

    _status_lock: threading.Lock
    returncode: int | None
    sentinel: int

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if flag != os.WNOHANG:
            while (code := self.poll()) is None:
                multiprocessing.connection.wait([self.sentinel], _EXIT_CHECK_SECONDS)
            return code
        with self._status_lock:
            return super().poll(os.WNOHANG)  # type: ignore[misc,no-any-return]

    def close(self) -> None:
        with self._status_lock:
            super().close()  # type: ignore[misc]


class _ForkServerPopen(_GuardedStatus, popen_forkserver.Popen):
    def __init__(self, process_obj: BaseProcess) -> None:
        self._status_lock = threading.Lock()
        super().__init__(process_obj)


class GuardedForkServerProcess(ForkServerProcess):
    """A forkserver child whose status is safe to poll from any thread."""

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> _ForkServerPopen:
        return _ForkServerPopen(process_obj)


# What multiprocessing reports for a forkserver child when the forkserver ended before passing
# on its status (killed, or ended by a fork or a descriptor refused at a pids or open-files
# limit): a decoder, tied to the forkserver's life, died with it.
_STATUS_LOST_WITH_THE_FORKSERVER = 255


def ended_with_its_forkserver(process: BaseProcess, exitcode: int | None) -> bool:
    """Whether `process`, which ended with `exitcode`, is a forkserver child whose status the
    forkserver's end took (the exit code is passed: a reaped process is closed, and says none)."""
    return isinstance(process, GuardedForkServerProcess) and exitcode == _STATUS_LOST_WITH_THE_FORKSERVER


def guarded_process(context: Any, **process_arguments: Any) -> BaseProcess:
    """`context.Process(**process_arguments)` (`context`: a multiprocessing context), with its
    status guarded under the forkserver; under another start method, multiprocessing's own."""
    if context.get_start_method() == "forkserver":
        return GuardedForkServerProcess(**process_arguments)
    process: BaseProcess = context.Process(**process_arguments)
    return process
