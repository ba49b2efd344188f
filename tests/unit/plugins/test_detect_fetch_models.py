"""`python -m videodag_service.fetch_models` run as a command, offline: with the model already in place it only
rebuilds and checks the text graph, and a failure is one clear line and a non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from videodag_service.plugins.models import fetched_model_file
from videodag_service.plugins.ssdlite.model import FROZEN_GRAPH_FILE, TEXT_GRAPH_FILE


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videodag_service.fetch_models", *args],
        capture_output=True, text=True, timeout=120, check=False
    )


def test_second_run_downloads_nothing_and_rebuilds_the_text_graph(tmp_path: Path) -> None:
    installed = tmp_path / FROZEN_GRAPH_FILE
    installed.parent.mkdir(parents=True)
    shutil.copyfile(fetched_model_file(FROZEN_GRAPH_FILE), installed)

    completed = run_script("--model-dir", str(tmp_path))

    assert completed.returncode == 0, completed.stderr
    assert "nothing downloaded" in completed.stdout
    assert "download " not in completed.stdout
    assert "1917 anchors" in completed.stdout
    assert (tmp_path / TEXT_GRAPH_FILE).read_text() == fetched_model_file(TEXT_GRAPH_FILE).read_text()


def test_failure_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")

    completed = run_script("--model-dir", str(not_a_directory))

    assert completed.returncode == 1
    assert completed.stderr.startswith("fetch_models: error:")
    assert "Traceback" not in completed.stderr
