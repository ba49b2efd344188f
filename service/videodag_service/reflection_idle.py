"""A reflection stream that has asked nothing for a while ends, giving back its slot and thread.

grpcurl keeps its reflection stream open for the whole command, and grpcui for the whole
session, though they ask only at the start (and grpcurl once more to print an error's
details): a `grpcurl ... WatchJob`, a health `Watch` or a long UploadAndRun would hold a
reflection slot (`--max-reflection-streams`) for as long as it runs, and 16 of them would
lock every other grpcurl out (`list`, `Health/Check`, even the `CancelJob` of the job being
watched) with RESOURCE_EXHAUSTED.

Such a stream ends once it has had no request for `--reflection-idle-timeout-seconds` (3 s),
as if its client had closed it: with status OK, logged at DEBUG as other reflection calls
are, counted as an OK call. The clients open another when they ask again: grpcurl and grpcui
(jhump/protoreflect's reflection client) send a request once more on a fresh stream when
theirs has ended, so an error's details still print at the end of a long call.

Why 3 s: clients ask in bursts, each request one round trip after the last answer, so no
burst comes near it, even over a slow link; and watching grpcurls give their slots back soon
after their lookups. A grpcurl whose long call ends while every slot is taken (16 others
started within the last 3 s) cannot look up its error's details, which it then prints
undecoded (10 s makes that three times as likely). A client that keeps its stream and cannot
reopen one would fail at its next lookup after a pause: 0 turns the limit off for it.

gRPC's blocking API cannot give up on a wait for the client's next message, so each wait moves
to a thread of its own, as an upload's does (`idle_watch`); the call's end wakes a thread still
waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TypeVar

from videodag_service.idle_watch import IdleTimeout, WatchedItems, run_watching_idle

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
WAIT_THREAD_NAME = "videodag-reflection-wait"


class RequestsUntilIdle(Iterator[Request]):
    """A stream's requests, ending as if its client had closed the stream once none has come for
    `idle_seconds` (0: never)."""

    def __init__(self, requests: Iterator[Request], idle_seconds: float) -> None:
        self._requests = requests
        self.idle_seconds = idle_seconds
        self.ended_idle = False
        """Whether the stream ended because it was idle, rather than closed by its client."""

    def __iter__(self) -> RequestsUntilIdle[Request]:
        return self

    def __next__(self) -> Request:
        if self.ended_idle:
            raise StopIteration
        if self.idle_seconds <= 0:
            return next(self._requests)
        try:
            return run_watching_idle(next, WatchedItems(self._requests, self.idle_seconds), WAIT_THREAD_NAME)
        except IdleTimeout:  # the limit passed, which only ends the stream
            self.ended_idle = True
            logger.debug("no reflection request for %g s (--reflection-idle-timeout-seconds): ending the stream, "
                         "which frees its slot; its client opens another when it asks again", self.idle_seconds)
            raise StopIteration from None
