"""The server started from a user's own Python script, with and without the main-module guard.

multiprocessing runs the main module again in every decoder process, so a script that starts
the server at module level starts it again in each of them, and they die before decoding
anything. Such a server must refuse to start and name the cause, not serve calls that all
fail with an error blaming the video. A script read from standard input has no file to run
again at all, guard or not: its hint says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from videodag_service.video.decoder_lifecycle import GUARD_HINT

SCRIPT = """\
import sys
from pathlib import Path

from videodag_client import VideodagClient
from videodag_service.server import start_server
from videodag_service.settings import Settings


def main():
    folder = Path(sys.argv[1])
    running = start_server(Settings(host="127.0.0.1", port=0, temp_dir=folder / "uploads", data_dir=folder / "data"))
    try:
        with VideodagClient(f"127.0.0.1:{running.port}") as client:
            events = list(client.upload_and_run(sys.argv[2], "frame_stats_v1"))
        print("frames processed:", events[-1].frames_processed)
    finally:
        running.stop()

"""


def run_script(body: str, tmp_path: Path, video: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "serve.py"
    script.write_text(body)
    return subprocess.run([sys.executable, str(script), str(tmp_path), str(video)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_script_that_guards_its_main_code_serves(tmp_path: Path, sample_clip: Path) -> None:
    completed = run_script(SCRIPT + 'if __name__ == "__main__":\n    main()\n', tmp_path, sample_clip)
    assert completed.returncode == 0, completed.stderr
    assert "frames processed: 120" in completed.stdout


def test_a_script_without_the_guard_is_refused_at_start_with_the_cause(tmp_path: Path, sample_clip: Path) -> None:
    completed = run_script(SCRIPT + "main()\n", tmp_path, sample_clip)
    assert completed.returncode == 1
    assert "DecodersCannotStart: decoder processes cannot start: the first one ended (exit status 1)" \
        in completed.stderr
    assert GUARD_HINT in completed.stderr
    assert "frames processed" not in completed.stdout  # no call was served
    assert not (tmp_path / "uploads").exists() or list((tmp_path / "uploads").iterdir()) == []


def test_a_script_read_from_standard_input_is_refused_with_its_own_cause(tmp_path: Path, sample_clip: Path) -> None:
    body = SCRIPT + 'if __name__ == "__main__":\n    main()\n'
    completed = subprocess.run([sys.executable, "-", str(tmp_path), str(sample_clip)], input=body,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 1
    assert "decoder processes cannot start" in completed.stderr
    assert "the main module is not a file ('<stdin>', as for a script read from standard input)" in completed.stderr
    assert 'save the script to a file and run that, or decode in threads (decode_isolation="thread")' \
        in completed.stderr
    assert GUARD_HINT not in completed.stderr
    assert "frames processed" not in completed.stdout
