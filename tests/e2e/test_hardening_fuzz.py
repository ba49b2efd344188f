"""Fuzzing the server with hostile request streams and hostile video bytes.

Every case must end with OK or one of the contract's typed refusals (never UNKNOWN, never a
hang or a crash), leave no upload behind, and, once all cases ran, the server must still
serve and hold no more threads or file descriptors than before. The examples are bounded so
the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from hardening_support import (
    TYPED_REFUSALS,
    CallOutcome,
    Request,
    Resources,
    assert_still_serving,
    chunks,
    raw_call,
    wait_until,
)
from harness import ServerFactory, ServerHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.hostile_media import (
    claim_avi_frame_count,
    claim_avi_frame_size,
    mp4_boxes,
    riff_chunks,
    truncated,
    with_box_size,
    with_flipped_bits,
    with_riff_chunk_size,
)
from videodag.v1 import run_pb2

CALL_TIMEOUT_SECONDS = 20.0
FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# Cheap pipelines only: the point is the stream and the bytes, not the plugins' speed.
PIPELINE_IDS = ["frame_stats_v1", "motion_v1", "FRAME_STATS_V1", "", "../frame_stats_v1", "/etc/passwd",
                "frame_stats_v1/..", "frame_stats_v1\x00", "ünïcødé_v1", "a" * 300, "con", "frame stats"]
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def durations() -> st.SearchStrategy[duration_pb2.Duration]:
    # Set field by field: out-of-range and mixed-sign durations are representable on the wire.
    return st.builds(
        lambda seconds, nanos: duration_pb2.Duration(seconds=seconds, nanos=nanos),
        st.one_of(st.integers(-5, 30), st.integers(-(10**12), 10**12)),
        st.one_of(st.just(0), st.integers(-(10**9), 10**9)),
    )


def run_options() -> st.SearchStrategy[run_pb2.RunOptions]:
    small = st.integers(-3, 30)

    def build(stride: int, max_frames: int, start: object, end: object) -> run_pb2.RunOptions:
        options = run_pb2.RunOptions(frame_stride=stride, max_frames=max_frames)
        if start is not None:
            options.start_offset.CopyFrom(start)
        if end is not None:
            options.end_offset.CopyFrom(end)
        return options

    return st.builds(build, st.one_of(small, INT32), st.one_of(small, INT32),
                     st.none() | durations(), st.none() | durations())


def configs(video: bytes) -> st.SearchStrategy[Request]:
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
    return st.builds(
        lambda pipeline_id, options, file_name, size, sha256: Request(config=run_pb2.RunConfig(
            pipeline_id=pipeline_id, options=options, file_name=file_name,
            declared_size_bytes=size, sha256=sha256,
        )),
        st.sampled_from(PIPELINE_IDS) | text,
        run_options(),
        st.sampled_from(["clip.avi", "", "../../etc/x.avi", "clip.AVI", "clip.mp4/..", "a" * 500]) | text,
        st.sampled_from([0, len(video), len(video) + 1, 1, 2**40]) | INT64,
        st.sampled_from(["", hashlib.sha256(video).hexdigest(), "0" * 64, "zz" * 32]) | text,
    )


@st.composite
def request_streams(draw: st.DrawFn, video: bytes) -> list[Request]:
    """A config (usually first), the video or junk cut at random points, empty chunks, stray configs."""
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(0, len(video)), max_size=6)))
        body = [Request(chunk=video[a:b]) for a, b in zip([0, *cuts], [*cuts, len(video)], strict=True)]
    else:
        body = [Request(chunk=junk) for junk in draw(st.lists(st.binary(max_size=4096), max_size=4))]
    for _ in range(draw(st.integers(0, 2))):
        body.insert(draw(st.integers(0, len(body))), Request(chunk=b""))
    if draw(st.integers(0, 9)) == 0:
        body.insert(draw(st.integers(0, len(body))), draw(configs(video)))
    opening = draw(st.sampled_from(["config", "config", "config", "config", "chunk", "nothing"]))
    if opening == "config":
        return [draw(configs(video)), *body]
    return body if opening == "chunk" else []


def call(server: ServerHarness, channel: grpc.Channel, requests: list[Request]) -> CallOutcome:
    outcome = raw_call(channel, requests, timeout=CALL_TIMEOUT_SECONDS)
    assert outcome.code == grpc.StatusCode.OK or outcome.code in TYPED_REFUSALS, (outcome.code, outcome.details)
    assert wait_until(lambda: server.leftover_uploads() == [], timeout=5), server.leftover_uploads()
    return outcome


def assert_clean_after(server: ServerHarness, good_video: Path, fuzz: Callable[[grpc.Channel], None]) -> None:
    """Run `fuzz` on a warm server, then check it still serves and kept no thread or descriptor."""
    assert_still_serving(server, good_video)  # warm-up: gRPC's threads and caches exist before the count
    with grpc.insecure_channel(server.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
        baseline = Resources.now()
        fuzz(channel)
    assert_still_serving(server, good_video)
    after = baseline.settled_back(fd_slack=1, thread_slack=1)
    assert after.fds <= baseline.fds + 1, (baseline, after)
    assert after.threads <= baseline.threads + 1, (baseline, after)
    assert server.leftover_uploads() == []


def test_hostile_request_streams_end_with_a_typed_status(make_server: ServerFactory, make_video) -> None:
    server = make_server(max_upload_bytes=1024 * 1024)
    good_video = make_video(6)
    video = good_video.read_bytes()

    def fuzz(channel: grpc.Channel) -> None:
        @settings(FUZZ_SETTINGS, max_examples=200)
        @given(requests=request_streams(video))
        def one_stream(requests: list[Request]) -> None:
            outcome = call(server, channel, requests)
            if not requests:
                assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
            elif not requests[0].HasField("config"):
                assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
                assert "first message must be the config" in outcome.details

        one_stream()

    assert_clean_after(server, good_video, fuzz)


def mp4_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    boxes = mp4_boxes(data)
    box_sizes = st.sampled_from([0, 1, 7, 8, 9, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
    return st.one_of(
        st.integers(0, len(data)).map(lambda length: truncated(data, length)),
        st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=24).map(
            lambda bits: with_flipped_bits(data, bits)),
        # Flips where the structure lives: the moov box and the first samples.
        st.lists(st.integers(0, 4096 * 8), min_size=1, max_size=8).map(lambda bits: with_flipped_bits(data, bits)),
        st.builds(lambda box, size: with_box_size(data, box, size), st.sampled_from(boxes), box_sizes),
        st.builds(lambda box, delta: with_box_size(data, box, box.size + delta),
                  st.sampled_from(boxes), st.integers(-16, 16)),
    )


def avi_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    found = riff_chunks(data)
    return st.one_of(
        st.integers(0, len(data)).map(lambda length: truncated(data, length)),
        st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=24).map(
            lambda bits: with_flipped_bits(data, bits)),
        st.builds(lambda chunk, size: with_riff_chunk_size(data, chunk, size), st.sampled_from(found),
                  st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)),
        st.integers(0, 2**32 - 1).map(lambda count: claim_avi_frame_count(data, count)),
        st.tuples(st.integers(0, 70000), st.integers(0, 70000)).map(
            lambda size: claim_avi_frame_size(data, *size)),
    )


def test_hostile_video_bytes_end_with_a_typed_status(
    make_server: ServerFactory, make_video, sample_clip: Path
) -> None:
    server = make_server(max_upload_bytes=4 * 1024 * 1024, max_video_frames=5000)
    good_video = make_video(6)
    sources = {"mp4": sample_clip.read_bytes(), "avi": make_video(30).read_bytes()}
    seen: dict[grpc.StatusCode, int] = {}

    def fuzz(channel: grpc.Channel) -> None:
        @settings(FUZZ_SETTINGS, max_examples=150)
        @given(st.sampled_from(["mp4", "avi", "avi"]).flatmap(
            lambda kind: (mp4_mutations if kind == "mp4" else avi_mutations)(sources[kind])))
        def one_file(data: bytes) -> None:
            requests = [Request(config=run_pb2.RunConfig(pipeline_id="frame_stats_v1", file_name="clip.bin")),
                        *chunks(data, 256 * 1024)]
            outcome = call(server, channel, requests)
            seen[outcome.code] = seen.get(outcome.code, 0) + 1
            if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "video too large" in outcome.details or "is empty: no video bytes arrived" not in outcome.details

        one_file()

    assert_clean_after(server, good_video, fuzz)
    # The mutations reached both ends: some files still played, some were refused.
    assert seen.get(grpc.StatusCode.OK, 0) > 0
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
