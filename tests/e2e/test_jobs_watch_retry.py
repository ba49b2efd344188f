"""A watch refused because the server already streams its maximum of watches (TOO_MANY_WATCHES)
is asked again after the retry delay the server gives, within the watch's reconnect window,
like a dropped connection; `videodag watch` and `VideodagClient.watch_job` share this."""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from harness import ServerFactory

from videodag_client import FailedPrecondition, Job, JobState, ResourceExhausted, VideodagClient, VideodagError
from videodag_service.job_servicer import WATCH_RETRY_SECONDS


def test_a_watch_refused_for_too_many_watches_waits_the_retry_delay_and_gets_in(
    make_server: ServerFactory, thousand_frame_video: Path
) -> None:
    server = make_server(max_job_watches=1)
    client = server.client
    job = client.submit_job(thousand_frame_video, "slow")  # 0.05 s a frame: it runs for the whole test
    refusals: list[tuple[VideodagError, float]] = []
    refused = threading.Event()

    def on_reconnect(error: VideodagError, _last_frame_index: int | None) -> None:
        refusals.append((error, time.monotonic()))
        refused.set()

    first_events: list[object] = []
    with (
        closing(client.watch_job(job.id, reconnect_window=0)) as holder,
        closing(client.watch_job(job.id, reconnect_window=60, on_reconnect=on_reconnect)) as waiting,
    ):
        assert getattr(next(iter(holder)), "id", None) == job.id  # the only watch slot is taken
        reader = threading.Thread(target=lambda: first_events.append(next(iter(waiting))))
        reader.start()
        assert refused.wait(30)
        holder.close()  # the slot frees while the refused watch waits out its retry delay
        reader.join(60)
        got_in = time.monotonic()

        errors = [error for error, _ in refusals]
        assert all(isinstance(e, ResourceExhausted) and e.reason == "TOO_MANY_WATCHES" for e in errors)
        assert errors[0].retry_after == WATCH_RETRY_SECONDS
        assert got_in - refusals[0][1] >= WATCH_RETRY_SECONDS * 0.9, "it waited the server's delay, not a backoff"
        [event] = first_events
        assert isinstance(event, Job) and event.id == job.id
        assert waiting.reconnects == len(refusals)
    assert client.cancel_job(job.id).state is JobState.CANCELLED


def test_a_watch_refused_for_too_many_watches_gives_up_when_its_reconnect_window_ends(
    make_server: ServerFactory, thousand_frame_video: Path
) -> None:
    server = make_server(max_job_watches=1)
    client = server.client
    job = client.submit_job(thousand_frame_video, "slow")
    with closing(client.watch_job(job.id, reconnect_window=0)) as holder:
        next(iter(holder))
        began = time.monotonic()
        with pytest.raises(ResourceExhausted) as refused:
            next(iter(client.watch_job(job.id, reconnect_window=1.0)))
        waited = time.monotonic() - began

    assert refused.value.reason == "TOO_MANY_WATCHES"
    assert 1.0 <= waited < WATCH_RETRY_SECONDS, "the retry delay is cut to the reconnect window"
    assert client.cancel_job(job.id).state is JobState.CANCELLED


def test_closing_the_client_ends_a_watch_waiting_out_the_retry_delay_at_once(
    make_server: ServerFactory, thousand_frame_video: Path
) -> None:
    server = make_server(max_job_watches=1)
    job = server.client.submit_job(thousand_frame_video, "slow")
    refused = threading.Event()
    outcome: list[BaseException] = []
    other = VideodagClient(server.target)
    with closing(server.client.watch_job(job.id, reconnect_window=0)) as holder:
        next(iter(holder))
        waiting = other.watch_job(job.id, reconnect_window=60, on_reconnect=lambda _error, _last: refused.set())

        def read() -> None:
            try:
                next(iter(waiting))
            except BaseException as error:
                outcome.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        assert refused.wait(30)
        closed = time.monotonic()
        other.close()
        reader.join(WATCH_RETRY_SECONDS * 2)
        ended = time.monotonic() - closed

    [error] = outcome
    assert isinstance(error, FailedPrecondition) and error.reason == "CLIENT_CLOSED"
    assert ended < WATCH_RETRY_SECONDS / 2, "close() ended the wait, not the retry delay"
    assert server.client.cancel_job(job.id).state is JobState.CANCELLED
