"""A client that stops reading results: the run waits for it instead of buffering the whole video's results."""

from __future__ import annotations

import logging
import time

import pytest
from hardening_support import rss_bytes, wait_until
from harness import ServerFactory

from videodag_client import Cancelled, FrameResult, RunSummary

FRAMES = 2000
RESULT_BYTES = 64 * 1024  # the `padded` pipeline's result per frame: 2000 frames make 131 MB


def test_a_client_that_stops_reading_stops_the_run_with_bounded_memory(
    make_server: ServerFactory, make_video
) -> None:
    server = make_server()
    video = make_video(FRAMES)
    rss_before = rss_bytes()
    stream = server.client.upload_and_run(video, "padded", timeout=60)
    first = next(e for e in stream if isinstance(e, FrameResult))
    assert first.frame_index == 0

    # The client reads nothing more. The server runs ahead only as far as the transport takes
    # (HTTP/2 flow-control windows and socket buffers), then waits in its send.
    processed: list[int] = []

    def stalled() -> bool:
        processed.append(server.recorder.count("frame"))
        return len(processed) >= 5 and processed[-1] == processed[-5]

    assert wait_until(stalled, timeout=10, interval=0.2)
    time.sleep(1.0)
    ahead = server.recorder.count("frame")
    assert ahead == processed[-1]  # still not moving
    assert ahead < FRAMES / 4
    assert rss_bytes() - rss_before < FRAMES * RESULT_BYTES / 3

    # Reading again resumes the run where it waited: every frame arrives, in order.
    rest = list(stream)
    frames = [e.frame_index for e in rest if isinstance(e, FrameResult)]
    assert frames == list(range(1, FRAMES))
    assert isinstance(rest[-1], RunSummary) and rest[-1].frames_processed == FRAMES
    assert server.leftover_uploads() == []


def test_a_client_that_reads_nothing_for_the_limit_is_cancelled_and_its_run_slot_freed(
    make_server: ServerFactory, make_video, sample_clip, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(result_read_timeout_seconds=1.0, max_concurrent_runs=1)
    stream = server.client.upload_and_run(make_video(FRAMES), "padded", timeout=60)
    with caplog.at_level(logging.WARNING, logger="videodag_service.unread_results"):
        assert next(e for e in stream if isinstance(e, FrameResult)).frame_index == 0
        # The client reads nothing more: its run stalls in gRPC's send, then its call is cancelled.
        assert wait_until(lambda: any("took no result for 1 s" in r.getMessage() for r in caplog.records),
                          timeout=30, interval=0.1)

    # The one run slot is free again, and the stalled run's files are gone.
    assert wait_until(lambda: server.leftover_uploads() == [], timeout=10)
    events = list(server.client.upload_and_run(sample_clip, "frame_stats_v1", timeout=60))
    assert isinstance(events[-1], RunSummary) and events[-1].frames_processed == 120
    # Reading again, the stalled client gets what the transport held, then the cancel.
    with pytest.raises(Cancelled):
        for _ in stream:
            pass
