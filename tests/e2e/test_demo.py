"""The demo the README's first command ends with (`scripts/demo.py`, after the install), run as it is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_the_demo_tracks_people_in_the_sample_and_says_where_its_results_went(tmp_path: Path) -> None:
    """Results asked for outside the repository (here a relative path) are named in full: the
    demo used to end in a traceback after its run, and exit 1."""
    finished = subprocess.run(
        [sys.executable, str(DEMO), "--output", "results.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"results: {tmp_path.resolve() / 'results.jsonl'}" in finished.stdout
    frames = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [frame["frame_index"] for frame in frames] == list(range(120))
    summary = re.search(r"^120 frames, (\d+) detections, (\d+) distinct track ids$", finished.stdout, re.MULTILINE)
    assert summary is not None, finished.stdout[-3000:]
    assert int(summary[1]) > 100 and 0 < int(summary[2]) < int(summary[1])
