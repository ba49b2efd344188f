"""The main job on embedded defaults: serve on loopback, run the sample clip, print the summary.

Starts `videodag-server` on a free loopback port, runs `videodag run` on the bundled
sample clip through `player_tracking_v1`, writes the per-frame results to
out/demo_results.jsonl, prints what the pipeline found, and stops the server.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE = REPO_ROOT / "samples" / "pedestrians_120.mp4"


def start_server(scratch: Path) -> tuple[subprocess.Popen[str], int]:
    # Its own upload and job folders, so the demo runs beside any other server on this machine.
    server = subprocess.Popen(
        [str(BIN / "videodag-server"), "--host", "127.0.0.1", "--port", "0", "--log-format", "text",
         "--temp-dir", str(scratch / "uploads"), "--data-dir", str(scratch / "jobs")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    for line in server.stdout:
        match = re.search(r"listening on [^:]+:(\d+)", line)
        if match:
            return server, int(match.group(1))
    raise SystemExit(f"videodag-server exited with {server.wait()} before listening")


def shown(path: Path) -> Path:
    """The results' path from the repository, as its README names them; in full when elsewhere."""
    resolved = path.resolve()
    return resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else resolved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("video", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--pipeline", default="player_tracking_v1")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "out" / "demo_results.jsonl")
    arguments = parser.parse_args()
    arguments.output.parent.mkdir(parents=True, exist_ok=True)

    scratch = Path(tempfile.mkdtemp(prefix="videodag-demo-"))
    server, port = start_server(scratch)
    try:
        command = [
            str(BIN / "videodag"), "--server", f"127.0.0.1:{port}",
            "run", str(arguments.video), "--pipeline", arguments.pipeline, "--output", str(arguments.output),
        ]
        print("$ " + " ".join(command), flush=True)
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            return completed.returncode
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)

    frames = [json.loads(line) for line in arguments.output.read_text().splitlines()]
    track_ids: Counter[int] = Counter()
    people = 0
    for frame in frames:
        for output in frame["result"].values():
            if isinstance(output, list):
                people += len(output)
                track_ids.update(int(item["track_id"]) for item in output if "track_id" in item)
    print(f"\n{len(frames)} frames, {people} detections, {len(track_ids)} distinct track ids")
    for track_id, count in track_ids.most_common(10):
        print(f"  track {track_id}: seen in {count} frames")
    print(f"results: {shown(arguments.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
