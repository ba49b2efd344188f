"""A client that stops reading results: the run waits for it instead of buffering the whole video's results."""

from __future__ import annotations

import time

from hardening_support import rss_bytes, wait_until
from harness import ServerFactory

from videodag_client import FrameResult, RunSummary

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
