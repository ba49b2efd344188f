"""SIGTERM, SIGINT and SIGHUP: the server's request to drain and stop, and a second one to hurry.

A Python signal handler runs in the main thread between two of its bytecodes, also while that
thread holds a lock. A handler that set a `threading.Event` the main thread was waiting on could
wait, for good, for the Event's own lock, which the main thread takes again as its timed wait
ends. Under load the window is wide (busy threads keep the main thread waiting for the GIL just
then), and a SIGTERM went unanswered until SIGKILL: no drain, every running job charged an
attempt. So the handler here takes no lock: it appends the signal's name to a list, and the
main thread looks at the list between short sleeps.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Protocol

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))

# How often the main thread looks for a signal: the drain starts at most this long after one.
_LOOK_SECONDS = 0.1


class StartGivenUp(SystemExit):
    """A second stop signal while the server was still starting (a job store out of reach can
    hold the start up without end): the process ends, with 128 + the signal's number."""


class StopSignals:
    """The stop signals received, oldest first, recorded without a lock."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._starting = True

    def install(self) -> None:
        """Handle the stop signals from now on, before the server starts: recovered jobs start
        running then, and a signal's default action (the process ends at once) would cost each
        an attempt, as a crash does, where a clean stop costs none."""
        for signum in STOP_SIGNALS:
            # An ignored SIGHUP stays ignored: `nohup videodag-server &` must outlive its terminal.
            if not (signum == getattr(signal, "SIGHUP", None) and signal.getsignal(signum) == signal.SIG_IGN):
                signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)  # one bytecode under the GIL: no lock
        if self._starting and len(self.received) > 1:
            raise StartGivenUp(128 + signum)

    def started(self) -> None:
        """The server serves: a second signal now hurries the drain instead of ending the start."""
        self._starting = False

    def wait_for_first(self) -> str:
        """The first signal's name, once one came. Sleeping, not waiting on a lock: a signal the
        kernel hands to another thread runs its handler only when the main thread next runs."""
        while not self.received:
            time.sleep(_LOOK_SECONDS)
        return self.received[0]

    def second(self) -> SecondSignal:
        """What the drain asks whether to hurry."""
        return SecondSignal(self)


class Hurry(Protocol):
    """What a drain asks whether to end at once: a `threading.Event`, or a `SecondSignal`."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class SecondSignal:
    """Whether a second stop signal came, asked as a `threading.Event` would be (`is_set`,
    `wait`) by a drain that also takes an Event."""

    def __init__(self, signals: StopSignals) -> None:
        self._signals = signals

    def is_set(self) -> bool:
        return len(self._signals.received) > 1

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = _LOOK_SECONDS if end is None else min(_LOOK_SECONDS, end - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True
