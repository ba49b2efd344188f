"""Giving up on an upload that sends nothing: `store_watching_idle` and `WatchedChunks`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fakes.waiting import SilentCall
from videodag_service.errors import UploadIdle
from videodag_service.observability.logging import current_request_id, request_id_bound
from videodag_service.upload_idle import WatchedChunks, first_message_watching_idle, store_watching_idle


def test_the_store_runs_to_its_result_when_chunks_keep_coming() -> None:
    def paced() -> Iterator[bytes]:
        for index in range(12):
            time.sleep(0.1)  # well inside the limit each time, 1.2 s in all: more than the limit
            yield bytes([index])

    stored = store_watching_idle(lambda chunks: b"".join(chunks), paced(), idle_seconds=1.0)
    assert stored == bytes(range(12))


def test_the_stores_own_error_is_raised_in_the_calling_thread() -> None:
    def store(chunks: Iterator[bytes]) -> None:
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        store_watching_idle(store, iter([b"x"]), idle_seconds=5)


def test_a_silent_upload_is_given_up_and_its_store_does_not_take_the_end_for_a_whole_upload() -> None:
    call = SilentCall(b"first", b"second")
    seen: list[bytes] = []
    store_ended_with: list[BaseException] = []
    store_done = threading.Event()

    def store(chunks: Iterator[bytes]) -> bytes:
        try:
            for chunk in chunks:
                seen.append(chunk)
            return b"finished"  # must never happen: the upload was cut off
        except BaseException as error:
            store_ended_with.append(error)
            raise
        finally:
            store_done.set()

    started = time.monotonic()
    with pytest.raises(UploadIdle) as raised:
        store_watching_idle(store, iter(call), idle_seconds=0.3)
    assert time.monotonic() - started >= 0.3
    assert raised.value.status_code == "DEADLINE_EXCEEDED" and raised.value.reason == "UPLOAD_IDLE"
    assert "sent no bytes for 0.3 s" in raised.value.message
    assert raised.value.details.metadata == {"upload_idle_timeout_seconds": "0.3"}
    # The given-up call then ends (its status went out): the store stops with the same error.
    call.end()
    assert store_done.wait(5)
    assert seen == [b"first", b"second"]
    assert store_ended_with == [raised.value]


def test_without_a_limit_the_store_runs_in_the_calling_thread() -> None:
    caller = threading.get_ident()
    assert store_watching_idle(lambda chunks: threading.get_ident(), iter([]), idle_seconds=0) == caller


def test_watched_chunks_refuse_a_limit_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        WatchedChunks(iter([]), 0)


def test_expired_chunks_raise_at_once_even_with_chunks_left() -> None:
    watched = WatchedChunks(iter([b"a", b"b"]), idle_seconds=10)
    assert next(watched) == b"a"
    assert watched.seconds_left() > 9
    error = watched.expire()
    with pytest.raises(UploadIdle) as raised:
        next(watched)
    assert raised.value is error


def test_the_store_logs_with_the_calls_request_id() -> None:
    with request_id_bound("req-9"):
        seen = store_watching_idle(lambda chunks: (current_request_id(), threading.get_ident()), iter([]), 5)
    assert seen[0] == "req-9" and seen[1] != threading.get_ident()


def test_once_every_chunk_has_arrived_the_limit_stops_so_slow_storing_is_not_silence() -> None:
    """The server's own work after the last chunk (checks, a job's record) may take longer
    than the limit: the client sent everything, and must not be told it was silent."""

    def store(chunks: Iterator[bytes]) -> bytes:
        whole = b"".join(chunks)
        time.sleep(0.5)  # longer than the limit, after the stream's end
        return whole

    assert store_watching_idle(store, iter([b"a", b"b"]), idle_seconds=0.2) == b"ab"


def test_a_silent_first_message_is_given_up_and_named_as_such() -> None:
    call = SilentCall()
    with pytest.raises(UploadIdle) as raised:
        first_message_watching_idle(lambda requests: next(requests), iter(call), idle_seconds=0.2)
    call.end()
    assert "the call sent no config message for 0.2 s" in raised.value.message


def test_only_waiting_for_the_client_counts_not_the_servers_own_work_on_a_chunk() -> None:
    def slow_store(chunks: Iterator[bytes]) -> list[bytes]:
        kept = []
        for chunk in chunks:
            time.sleep(0.5)  # a slow disk: longer than the limit, on every chunk
            kept.append(chunk)
        return kept

    assert store_watching_idle(slow_store, iter([b"a", b"b", b"c"]), idle_seconds=0.2) == [b"a", b"b", b"c"]


def _paced(size: int, every: float, count: int) -> Iterator[bytes]:
    for _ in range(count):
        time.sleep(every)
        yield b"v" * size


def test_a_client_faster_than_the_minimum_rate_is_never_cut_off_whatever_its_chunk_size() -> None:
    """1900 bytes a second against a minimum of 1000, in chunks just under the limit's worth:
    counting whole spans of the limit, two such chunks had to arrive within one, and it was
    cut off as if it sent 1000 bytes a second too few."""
    stored = store_watching_idle(lambda chunks: sum(len(chunk) for chunk in chunks), _paced(990, 0.52, 5),
                                 idle_seconds=1.0, min_bytes_per_second=1000)
    assert stored == 5 * 990


def test_a_client_slower_than_the_minimum_rate_is_cut_off_however_often_it_sends() -> None:
    started = time.monotonic()
    with pytest.raises(UploadIdle, match=r"the upload sent \d+ bytes in 1 s, under the server's minimum of 1000 "
                                         r"bytes a second") as refused:
        store_watching_idle(lambda chunks: sum(len(chunk) for chunk in chunks), _paced(10, 0.05, 400),
                            idle_seconds=1.0, min_bytes_per_second=1000)
    assert 1.0 <= time.monotonic() - started < 5
    assert refused.value.details.metadata == {"upload_idle_timeout_seconds": "1", "upload_min_bytes_per_second": "1000"}


def test_the_limits_are_said_as_the_operator_set_them() -> None:
    """`:g` said a minimum of 1234567 bytes a second as 1.23457e+06, in the message and the metadata."""
    with pytest.raises(UploadIdle, match=r"under the server's minimum of 1234567 bytes a second") as refused:
        store_watching_idle(lambda chunks: sum(len(chunk) for chunk in chunks), _paced(10, 0.05, 400),
                            idle_seconds=0.25, min_bytes_per_second=1234567)
    assert refused.value.details.metadata == {"upload_idle_timeout_seconds": "0.25",
                                              "upload_min_bytes_per_second": "1234567"}
