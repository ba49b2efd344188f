"""player_tracking_v1 on the real sample clip over gRPC: people found, ids stable, results ordered."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hardening_support import decoder_processes, settled_threads, threads_but_rpc_workers, wait_until
from harness import ServerFactory, ServerHarness

from videodag_client import FrameResult, RunOptions, RunSummary


def test_player_tracking_on_the_sample_clip(server: ServerHarness, sample_clip: Path) -> None:
    events = list(server.client.upload_and_run(sample_clip, "player_tracking_v1"))
    frames = [event for event in events if isinstance(event, FrameResult)]
    assert [frame.frame_index for frame in frames] == list(range(120))

    lifetimes: Counter[int] = Counter()
    for frame in frames:
        players = frame.result["players"]
        for player in players:
            x1, y1, x2, y2 = player["box"]
            # Boxes are the tracker's smoothed estimates, kept within the 768x576 frame.
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
            assert player["label"] == "person"
            assert 0.0 < player["score"] <= 1.0
        ids = [player["track_id"] for player in players]
        assert len(ids) == len(set(ids)), f"frame {frame.frame_index} repeats a track id"
        lifetimes.update(ids)

    # The clip shows a handful of pedestrians at a time (2 to 7 per frame, about a dozen in
    # all); a tracker that lost them every few frames would hand out ids by the hundred.
    assert sum(1 for frame in frames if frame.result["players"]) >= 110
    assert len(lifetimes) <= 25
    # The man crossing in the middle is followed under one id through almost the whole clip.
    assert lifetimes.most_common(1)[0][1] >= 100
    # Most detections belong to tracks that lived for at least a second (10 frames).
    long_lived = sum(count for count in lifetimes.values() if count >= 10)
    assert long_lived >= 0.85 * sum(lifetimes.values())

    summary = events[-1]
    assert isinstance(summary, RunSummary)
    assert [(t.node_id, t.calls) for t in summary.node_timings] == [("detect", 120), ("track", 120)]
    assert server.leftover_uploads() == []


def test_two_frames_at_once_give_the_same_players_as_one_at_a_time(
    make_server: ServerFactory, sample_clip: Path
) -> None:
    """The detector works on two frames at once; the tracker must still see them in order."""
    options = RunOptions(max_frames=60)
    results = {}
    for workers in (1, 2):
        server = make_server(frame_workers=workers)
        results[workers] = [
            (event.frame_index, event.result)
            for event in server.client.upload_and_run(sample_clip, "player_tracking_v1", options)
            if isinstance(event, FrameResult)
        ]
        assert server.leftover_uploads() == []
    assert [index for index, _ in results[2]] == list(range(60))
    assert results[2] == results[1]


def test_a_cancelled_tracking_run_leaves_no_lane_decoder_or_upload_behind(
    server: ServerHarness, sample_clip: Path
) -> None:
    """Cancelled while the detector has two frames in flight: the run waits for them, then
    everything it used is gone and the server serves the next run."""
    threads_before = settled_threads()
    stream = server.client.upload_and_run(sample_clip, "player_tracking_v1")
    for event in stream:
        if isinstance(event, FrameResult) and event.frame_index == 2:
            break
    stream.close()
    assert server.uploads_left_after() == []
    assert wait_until(lambda: not decoder_processes()), decoder_processes()
    # No videodag-nodes (lanes) or videodag-run thread left.
    assert wait_until(lambda: threads_but_rpc_workers() == threads_before), threads_but_rpc_workers()
    again = [event for event in server.client.upload_and_run(sample_clip, "player_tracking_v1",
                                                               RunOptions(max_frames=3))
             if isinstance(event, FrameResult)]
    assert [frame.frame_index for frame in again] == [0, 1, 2]

