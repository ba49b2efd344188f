"""Waiting for something another thread or process does, without a fixed sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

Item = TypeVar("Item")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Whether `condition()` became true within `timeout` seconds, asked every `interval`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def frame_segments_left(timeout: float = 2.0) -> list[str]:
    """The frame-ring segments in /dev/shm once none are left or `timeout` seconds have passed.

    /dev/shm is the machine's: a server run by someone else, or another test run, has its
    segments there too, each for the milliseconds until its decoder maps it. One that the
    code under test leaves behind stays, and is returned.
    """
    from videodag_service.video.frame_ring import SEGMENT_PREFIX

    shm = Path("/dev/shm")

    def segments() -> list[str]:
        return sorted(path.name for path in shm.glob(SEGMENT_PREFIX + "*"))

    wait_until(lambda: not segments(), timeout)
    return segments()


class SilentCall(Generic[Item]):
    """A call's request stream: the messages given, then silence until `end()`, as when the
    call ends (gRPC's blocking iterator then stops); for what must give up on a silent client."""

    def __init__(self, *messages: Item) -> None:
        self._messages = messages
        self.ended = threading.Event()

    def __iter__(self) -> Iterator[Item]:
        yield from self._messages
        self.ended.wait(30)

    def end(self) -> None:
        self.ended.set()
