"""A server whose node call was given up on at the time limit, still inside ONNX Runtime, stops
cleanly: exit 0, not the C++ runtime's abort (status 134) under the call at the process's exit.

Real plugins and models: SSDLite keeping every box it scores (threshold 0, no overlap removed)
hands text recognition thousands of regions of one frame, minutes of ONNX Runtime work, far
past a 20 s limit (which the models' loading, at the run's start, stays within).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from videodag_client import Internal, RunOptions, VideodagClient

SLOW_PIPELINE = """
id: slow_text
version: "1"
nodes:
  - {id: find, plugin: ssdlite.detect_people, params: {score_threshold: 0, iou_threshold: 1, max_detections: 5000},
     inputs: {image: frame.image}}
  - {id: read, plugin: rapidocr.recognize_text, inputs: {image: frame.image, regions: find.detections}}
outputs: {texts: read.texts}
"""

COMMANDS = {
    "videodag-server": [str(Path(sys.executable).with_name("videodag-server"))],
    "python -m videodag_service.server": [sys.executable, "-m", "videodag_service.server"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_server_stops_cleanly_with_a_node_call_still_stuck_in_onnx_runtime(
    tmp_path: Path, sample_clip: Path, command: str
) -> None:
    pipelines, temporary = tmp_path / "pipelines", tmp_path / "tmp"
    pipelines.mkdir()
    temporary.mkdir()
    (pipelines / "slow_text.yaml").write_text(SLOW_PIPELINE)
    server = subprocess.Popen(
        [*COMMANDS[command], "--port", "0", "--pipeline-dir", str(pipelines), "--node-timeout-seconds", "20",
         "--temp-dir", str(tmp_path / "uploads"), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temporary)},
    )
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip().rpartition(" ")[2]
        with VideodagClient(address, timeout=60) as client, pytest.raises(Internal) as failed:
            for _ in client.upload_and_run(sample_clip, "slow_text", RunOptions(max_frames=1)):
                pass
        assert failed.value.reason == "NODE_TIMED_OUT" and "node 'read'" in failed.value.message
        assert "failed on frame 0" in failed.value.message, "its call on the frame, not its loading, was given up on"
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)

    assert "terminate called" not in stderr
    assert server.returncode == 0, stderr[-2000:]
    assert "1 node call(s) given up on at the node time limit are still running: ending the process" in stderr
    # ONNX Runtime keeps a file of its own there (.ses), the same at every start.
    assert [path.name for path in temporary.glob("pymp-*")] == [], "the forkserver's folder is removed as ever"
