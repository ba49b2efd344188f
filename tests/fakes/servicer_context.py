"""A `grpc.ServicerContext` for tests that drive a handler's helpers without a server.

grpcio-testing's contexts exist only inside its own server harness; code that takes a
context (ending a call with a status, watching a call's end, cancelling a stalled call) is
tested here with one whose state the test sets and whose outcome it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc


class CallAborted(Exception):
    """Raised by `FakeServicerContext.abort`, as gRPC's own abort ends the handler with an exception."""


class FakeServicerContext(grpc.ServicerContext):
    """One call's context: active or already ended, with or without a deadline.

    `active=False` is a call gRPC has ended before the handler answers (its client cancelled
    it, or gRPC's cancel at the end of a shutdown's grace). `abort` records the status and
    raises CallAborted; `cancel` and `end` end the call, running its callbacks as gRPC does.
    """

    def __init__(self, *, active: bool = True, time_remaining: float | None = None) -> None:
        self.active = active
        self.remaining = time_remaining
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None
        self.trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()
        self.cancels = 0
        self._callbacks: list[Callable[[], None]] = []

    def end(self) -> None:
        """The call ends (its client went away): inactive from now on, its callbacks run."""
        self.active = False
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_active(self) -> bool:
        return self.active

    def time_remaining(self) -> float | None:
        return self.remaining

    def cancel(self) -> None:
        self.cancels += 1
        self.end()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if not self.active:
            return False
        self._callbacks.append(callback)
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.code = code
        self.details = details
        raise CallAborted(details)

    def abort_with_status(self, status: Any) -> NoReturn:
        self.set_trailing_metadata(status.trailing_metadata)
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailing_metadata = tuple(trailing_metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}
