"""Real servers on loopback for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import ServerFactory, ServerHarness, make_dag

from fakes.fake_plugins import Recorder
from videodag_service.server import start_server
from videodag_service.settings import Settings


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with settings overrides: `make_server(max_upload_bytes=1000)`."""
    started: list[ServerHarness] = []

    def start(**overrides: object) -> ServerHarness:
        upload_dir = tmp_path / f"uploads{len(started)}"
        settings = replace(
            Settings(host="127.0.0.1", port=0, temp_dir=upload_dir, data_dir=tmp_path / f"data{len(started)}"),
            **overrides,
        )
        recorder = Recorder()
        harness = ServerHarness(start_server(settings, make_dag(tmp_path / f"s{len(started)}", recorder)),
                                settings.temp_dir, recorder)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        harness.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> ServerHarness:
    return make_server()
