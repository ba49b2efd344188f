"""What a server says at start about pipelines that load but do work nobody reads."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from fakes.fake_plugins import Recorder, make_registry
from videodag_service.dag import DagPipelineService, load_pipeline_folder
from videodag_service.server import start_server
from videodag_service.settings import Settings

LEFT_BEHIND = """
id: left_behind
version: "1"
nodes:
  - id: count
    plugin: test.counter
    inputs: {index: frame.index}
  - id: forgotten
    plugin: test.add
    inputs: {left: count.count, right: frame.index}
  - id: total
    plugin: test.add
    inputs: {left: count.count, right: frame.index}
outputs:
  total: total.sum
"""


def test_a_node_nobody_reads_is_named_in_a_warning_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A detector left in a pipeline after an edit runs on every frame for nothing, silently:
    such a pipeline ran 8 times slower than without it."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    path = pipelines / "left_behind.yaml"
    path.write_text(textwrap.dedent(LEFT_BEHIND))
    dag = DagPipelineService(load_pipeline_folder(pipelines, make_registry(Recorder())))
    assert dag.get_pipeline("left_behind").unread_nodes() == ["forgotten"]
    caplog.set_level(logging.WARNING, logger="videodag_service.server")
    running = start_server(Settings(host="127.0.0.1", port=0, temp_dir=tmp_path / "uploads",
                                    data_dir=tmp_path / "data"), dag)
    running.stop()
    warnings = [record.getMessage() for record in caplog.records if "reads node" in record.getMessage()]
    assert warnings == [f"pipeline 'left_behind' ({path}): no node or output reads node(s) 'forgotten', which run "
                        "on every frame all the same"]


def test_the_builtin_pipelines_read_every_node() -> None:
    dag = DagPipelineService.from_folder()
    assert {spec.id: spec.unread_nodes() for spec in dag.pipelines()} == {spec.id: [] for spec in dag.pipelines()}
