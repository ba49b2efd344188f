"""The Node.js example client (@grpc/grpc-js + @grpc/proto-loader, built from the .proto) against a real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import pytest
from ecosystem_tools import NODE_CLIENT_DIR, node
from harness import ServerHarness

from fakes.fake_servicer import AcknowledgeUpload, FakeVideoPipelineServicer, serving
from videodag_client import FrameResult, RunOptions

SCRIPT = NODE_CLIENT_DIR / "upload_and_run.js"
NOT_FOUND = 5
USAGE = 64
INVALID_ARGUMENT = 3


def run_node_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node(), str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def decoded_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def test_node_client_receives_every_frame_in_order(server: ServerHarness, sample_clip: Path) -> None:
    completed = run_node_client(
        "--target", server.target, "--pipeline", "frame_stats_v1", "--chunk-size", "65536", str(sample_clip)
    )
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    frames = [event["frame"] for event in events if event["event"] == "frame"]
    expected_frames = decoded_frame_count(sample_clip)

    assert [event["event"] for event in events] == ["upload_received", "video_info", *["frame"] * expected_frames,
                                                    "summary"]
    assert [frame["frame_index"] for frame in frames] == list(range(expected_frames))
    assert events[0]["upload_received"]["size_bytes"] == sample_clip.stat().st_size
    assert events[1]["video_info"]["width"] == 768 and events[1]["video_info"]["height"] == 576
    assert events[-1]["summary"]["frames_processed"] == expected_frames
    assert frames[10]["timestamp"] == 1.0  # 10 fps
    # The same numbers as the Python client gets for the same clip: Structs decoded, not mangled.
    with server.client.upload_and_run(sample_clip, "frame_stats_v1") as run:
        python_results = {e.frame_index: e.result for e in run if isinstance(e, FrameResult)}
    assert {frame["frame_index"]: frame["result"] for frame in frames} == python_results
    assert server.leftover_uploads() == []


def test_node_client_can_ask_for_decoding_during_the_upload(server: ServerHarness, sample_clip: Path) -> None:
    """The flag reaches the server (the fake records the config) and a real server runs with it."""
    servicer = FakeVideoPipelineServicer()
    servicer.run_script = [AcknowledgeUpload()]
    with serving(servicer) as fake_target:
        completed = run_node_client("--target", fake_target, "--pipeline", "frame_stats_v1",
                                    "--decode-during-upload", str(sample_clip))
    assert completed.returncode == 0, completed.stderr
    assert servicer.config.decode_during_upload
    assert servicer.config.declared_size_bytes == sample_clip.stat().st_size

    completed = run_node_client("--target", server.target, "--pipeline", "frame_stats_v1", "--decode-during-upload",
                                str(sample_clip))
    assert completed.returncode == 0, completed.stderr
    kinds = [json.loads(line)["event"] for line in completed.stdout.splitlines()]
    assert kinds.count("frame") == decoded_frame_count(sample_clip)
    assert kinds.count("upload_received") == 1 and kinds[-1] == "summary"
    assert server.leftover_uploads() == []


def test_node_client_sends_the_sampling_options(server: ServerHarness, sample_clip: Path) -> None:
    completed = run_node_client(
        "--target", server.target, "--pipeline", "frame_stats_v1", "--stride", "7", "--max-frames", "5",
        str(sample_clip),
    )
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    indexes = [event["frame"]["frame_index"] for event in events if event["event"] == "frame"]
    with server.client.upload_and_run(sample_clip, "frame_stats_v1", RunOptions(frame_stride=7, max_frames=5)) as run:
        assert indexes == [e.frame_index for e in run if isinstance(e, FrameResult)] == [0, 7, 14, 21, 28]


def test_node_client_exits_with_not_found_for_an_unknown_pipeline(server: ServerHarness, sample_clip: Path) -> None:
    completed = run_node_client("--target", server.target, "--pipeline", "no_such_pipeline", str(sample_clip))

    assert completed.returncode == NOT_FOUND
    assert completed.stdout == ""
    error = json.loads(completed.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == NOT_FOUND and error["name"] == "NOT_FOUND"
    assert "no_such_pipeline" in error["message"] and "frame_stats_v1" in error["message"]
    # From the status trailer's details, which only the contract's error_details types decode.
    assert error["reason"] == "PIPELINE_NOT_FOUND" and error["metadata"]["pipeline_id"] == "no_such_pipeline"
    assert server.leftover_uploads() == []


def test_node_client_reports_every_bad_field_the_server_names(server: ServerHarness, sample_clip: Path) -> None:
    completed = run_node_client("--target", server.target, "--pipeline", "frame_stats_v1", "--stride=-3",
                                "--max-frames=-1", str(sample_clip))

    assert completed.returncode == INVALID_ARGUMENT
    error = json.loads(completed.stderr.strip().splitlines()[-1])["error"]
    assert error["reason"] == "INVALID_OPTIONS"
    assert [violation["field"] for violation in error["field_violations"]] == [
        "config.options.frame_stride", "config.options.max_frames"
    ]
    assert server.leftover_uploads() == []


@pytest.mark.parametrize(("flag", "value"), [("--stride", "abc"), ("--max-frames", "5x"), ("--chunk-size", "")])
def test_node_client_refuses_a_number_it_cannot_read(sample_clip: Path, flag: str, value: str) -> None:
    """parseInt read "abc" as NaN, which went out as 0: every frame, and exit 0."""
    completed = run_node_client("--pipeline", "frame_stats_v1", f"{flag}={value}", str(sample_clip))

    assert completed.returncode == USAGE
    assert completed.stderr.strip() == f"{flag} takes a whole number, got {json.dumps(value)}"
    assert completed.stdout == ""


def test_node_client_piped_into_head_stops_quietly(server: ServerHarness, sample_clip: Path) -> None:
    """`... | head -2` closes the client's stdout after two events: no EPIPE stack trace, exit 0."""
    pipeline = subprocess.run(
        f"'{node()}' '{SCRIPT}' --target {server.target} --pipeline frame_stats_v1 '{sample_clip}' | head -2; "
        "exit ${PIPESTATUS[0]}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120, check=False,
    )
    assert pipeline.returncode == 0, pipeline.stderr
    assert "EPIPE" not in pipeline.stderr and pipeline.stderr == ""
    assert [json.loads(line)["event"] for line in pipeline.stdout.splitlines()] == ["upload_received", "video_info"]
