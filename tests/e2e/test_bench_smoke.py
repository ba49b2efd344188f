"""The benchmark still runs: `bench/run_benchmark.py --tiny` once, end to end, with real servers.

Not a timed test: on a tiny input the ratios mean nothing, so only their presence and
form are checked, never whether they PASS.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = REPO_ROOT / "bench" / "run_benchmark.py"


def test_the_benchmark_runs_on_a_tiny_input_and_prints_every_measurement() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--tiny"], capture_output=True, text=True, timeout=240, cwd=REPO_ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout
    assert "server in a subprocess on loopback" in output
    assert re.search(r"720p clip: (H\.264 \(libx264\)|MPEG-4 Part 2)", output)
    rows = [line for line in output.splitlines() if re.match(r"\(\d\)", line)]
    for measurement in range(1, 7):
        assert any(row.startswith(f"({measurement})") for row in rows), f"no row for ({measurement})"
    # Every ratio with a target got a verdict, and every measured throughput is a positive number.
    targeted = [row for row in rows if re.search(r"(>=|>|<) \d", row)]
    assert len(targeted) == 2 + 2 * 2 + 2 + 1
    assert all(row.rstrip().endswith(("PASS", "MISS")) for row in targeted)
    rates = [float(value.replace(",", "")) for value in re.findall(r"\b(\d[\d,]*(?:\.\d+)?) (?:fps|MB/s)", output)]
    assert rates and all(rate > 0 for rate in rates)
    # Row (2)'s CPU a frame counts the server's decoder processes, so the server's share is
    # never nothing, and its bound stands beside the loop's own.
    frame_cpu = re.findall(r"\(2\)  CPU per frame: server with its decoders \+ client .* (\d+\.\d\d) \+ "
                           r"(\d+\.\d\d) ms +\(1\) (\d+\.\d\d) ms", output)
    assert len(frame_cpu) == 2 and all(float(server) > 0 for server, _client, _loop in frame_cpu)
    assert len(re.findall(r"\(2\)  bound by CPU: .* fps +\(1\) bound [\d,]+ fps", output)) == 2
    # Each upload row has the two servers' CPU a GB beside what SHA-256 alone costs.
    cpu_rows = re.findall(r"\(4\)  server CPU a GB: service, bare stream .* \d+\.\d\d s, \d+\.\d\d s +"
                          r"SHA-256 alone \d+\.\d\d s", output)
    assert len(cpu_rows) == 2
    hashing_rows = re.findall(r"\(4\)  UploadAndRun against that hashing bare stream .* \d+\.\d{3}x", output)
    assert len(hashing_rows) == 2
    assert re.search(r"\(5\) server memory growth during upload .* \+\d+(\.\d+)? MB", output)
    assert len(re.findall(r"\(6\) first result after upload ends.* \d+\.\d ms", output)) == 4
    # The paced-upload rows: a time for the first result with decoding during the upload, and without.
    early = re.findall(r"\(6\) first result, upload paced to .* at (\d+\.\d+) s, upload done at (\d+\.\d+) s "
                       r"+stored first: at (\d+\.\d+) s", output)
    assert len(early) >= 2
    assert "720p, fragmented MP4" in output  # a file that qualifies only in a decoder process
