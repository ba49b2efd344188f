"""The release a process runs, told by `--version` and by the server's start line: replicas and
RQ workers of two releases share a job store during an upgrade, and an operator must tell them apart."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from videodag_service.dag import DagPipelineService
from videodag_service.server import start_server
from videodag_service.settings import Settings

RELEASE = version("videodag")


@pytest.mark.parametrize("command", ["videodag", "videodag-server", "videodag-worker"])
def test_each_command_prints_its_name_and_release_and_exits_zero(command: str) -> None:
    executable = Path(sys.executable).with_name(command)
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{command} {RELEASE}\n", "")


def test_the_server_says_its_release_when_it_starts_serving(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="videodag_service.server")
    running = start_server(Settings(host="127.0.0.1", port=0, temp_dir=tmp_path / "uploads",
                                    data_dir=tmp_path / "data"), DagPipelineService.from_folder())
    running.stop()
    serving = [record.getMessage() for record in caplog.records if record.getMessage().startswith("serving ")]
    assert len(serving) == 1 and serving[0].endswith(f" (videodag {RELEASE})")
