"""Decoder processes started, watched and reaped by many threads at once, without misreads.

multiprocessing learns a forkserver child's exit status by reading it from a pipe, and not
only in the thread that owns the child: every `Process.start()` first polls all the children
of the interpreter (so does `multiprocessing.active_children()`), from whatever thread calls
it. Two threads reading one child's pipe misreport its status: the loser reads the pipe's
end and takes it for a killed forkserver, 255. Worse, a thread that reads just after the
owner has closed the child (`Process.close()`) reads whatever descriptor took that number
since: the pipe of a run starting at that moment, whose messages it then eats, and that run
fails (CPython gh-130895, open). So every call that reads a child's status, starts a child
(and with it polls the others) or closes one holds one lock here. The wait for a child's
end is done without it, on the child's pipe; only the read after it holds the lock.

Starting a process holds the lock for the 4-7 ms the forkserver takes to fork it: starts are
one at a time in the forkserver anyway, and a run's end may wait that long for another's start.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import threading
from multiprocessing.process import BaseProcess

# Reentrant: a finalizer that ends a decoder (a spare's keeper collected) may run in a thread
# that holds it already, in the middle of a start.
_CHILDREN_LOCK = threading.RLock()


def start(process: BaseProcess) -> None:
    """`process.start()`, which also polls the interpreter's other children."""
    with _CHILDREN_LOCK:
        process.start()


def wait_for_exit(process: BaseProcess, timeout: float | None) -> int | None:
    """Its exit code once it has ended, waiting up to `timeout` seconds; None if it still runs."""
    multiprocessing.connection.wait([process.sentinel], timeout)  # readable at its end: no read yet
    return exit_code(process)


def exit_code(process: BaseProcess) -> int | None:
    """Its exit code if it has ended (a negative signal number if killed), None if it still runs;
    never waits. Also drops it from multiprocessing's list of children, as `join()` does."""
    with _CHILDREN_LOCK:
        process.join(0)
        return process.exitcode


def kill(process: BaseProcess) -> None:
    """SIGKILL, unless its end is known already (a process reaped may have a successor of its pid)."""
    with _CHILDREN_LOCK:
        process.kill()


def release(process: BaseProcess) -> None:
    """Close the ended process's pipe to the forkserver; its number may serve another child at once."""
    with _CHILDREN_LOCK:
        process.close()


def live_children() -> list[BaseProcess]:
    """`multiprocessing.active_children()`, which polls every child, taken under the same lock."""
    with _CHILDREN_LOCK:
        return multiprocessing.active_children()
