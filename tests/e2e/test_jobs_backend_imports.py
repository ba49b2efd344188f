"""Redis and RQ are loaded only by the Redis backend: an embedded server, jobs run, never imports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SERVE_A_JOB = """
import json, sys
from pathlib import Path
from videodag_client import VideodagClient
from videodag_service.server import start_server
from videodag_service.settings import Settings

folder = Path(sys.argv[2])
running = start_server(Settings(host="127.0.0.1", port=0, temp_dir=folder / "uploads", data_dir=folder / "jobs"))
try:
    with VideodagClient(f"127.0.0.1:{running.port}") as client:
        job = client.submit_job(sys.argv[1], "frame_stats_v1")
        states = [event.state.name for event in client.watch_job(job.id) if hasattr(event, "state")]
finally:
    running.stop(grace_seconds=1)
print(json.dumps({"states": states, "loaded": sorted(name for name in sys.modules
                                                     if name.split(".")[0] in ("redis", "rq"))}))
"""


def test_an_embedded_server_running_a_job_loads_neither_redis_nor_rq(sample_clip: Path, tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", _SERVE_A_JOB, str(sample_clip), str(tmp_path)],
                              capture_output=True, text=True, timeout=180, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    seen = json.loads(finished.stdout.splitlines()[-1])
    assert seen["states"][-1] == "SUCCEEDED"
    assert seen["loaded"] == []
