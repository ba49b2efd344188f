"""The `bytetrack` plugin as the engine sees it: declaration, open/process/close, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from videodag_service.dag.plugin import ToolInstance
from videodag_service.plugins.bytetrack import PLUGIN
from videodag_service.plugins.detections import Detections

EXPECTED_PARAMS = {
    "track_high_thresh": (float, 0.5),
    "track_low_thresh": (float, 0.1),
    "new_track_thresh": (float, 0.6),
    "match_thresh": (float, 0.8),
    "confirm_match_thresh": (float, 0.7),
    "track_buffer": (int, 30),
    "frame_rate": (int, 30),
    "fuse_score": (bool, True),
    "per_label": (bool, False),
}


def _defaults() -> dict[str, Any]:
    tool = PLUGIN.tool("track")
    assert tool is not None
    return {param.name: param.default for param in tool.params}


def _people(step: int) -> Detections:
    return Detections.from_lists(
        [[10 + 3 * step, 20, 50 + 3 * step, 120], [400, 30 + 2 * step, 440, 130 + 2 * step]],
        [0.9, 0.8],
        ["person", "person"],
    )


def test_plugin_declares_a_stateful_track_tool() -> None:
    assert PLUGIN.name == "bytetrack"
    tool = PLUGIN.tool("track")
    assert tool is not None and tool.stateful
    assert [port.name for port in tool.inputs] == ["detections"]
    assert [port.name for port in tool.outputs] == ["tracks"]
    assert {p.name: (p.kind, p.default) for p in tool.params} == EXPECTED_PARAMS
    assert all(param.description for param in tool.params)


def test_process_returns_tracks_whose_json_carries_track_ids() -> None:
    tool = PLUGIN.tool("track")
    assert tool is not None
    instance = tool.open(_defaults())
    assert isinstance(instance, ToolInstance)
    try:
        for step in range(5):
            outputs = instance.process({"detections": _people(step)})
        assert set(outputs) == {"tracks"}
        objects = outputs["tracks"].to_json()
        json.dumps(objects)
        assert [item["track_id"] for item in objects] == [1, 2]
        assert [item["label"] for item in objects] == ["person", "person"]
        assert objects[0]["box"][0] == pytest.approx(10 + 3 * 4, abs=1.0)
    finally:
        instance.close()


def test_each_open_is_a_fresh_tracker() -> None:
    tool = PLUGIN.tool("track")
    assert tool is not None
    first, second = tool.open(_defaults()), tool.open(_defaults())
    for step in range(3):
        first.process({"detections": _people(step)})
    lone = Detections.from_lists([[600, 400, 640, 500]], [0.9], ["car"])
    first_ids = [first.process({"detections": lone})["tracks"].track_ids.tolist() for _ in range(2)]
    second_ids = [second.process({"detections": lone})["tracks"].track_ids.tolist() for _ in range(2)]
    assert second_ids == [[1], [1]]  # a first frame: shown at once, ids from 1
    assert first_ids == [[], [3]]  # ids 1 and 2 are taken; a newcomer is shown once confirmed
    first.close()
    second.close()


def test_params_reach_the_tracker() -> None:
    tool = PLUGIN.tool("track")
    assert tool is not None
    strict = tool.open({**_defaults(), "new_track_thresh": 0.95})
    assert len(strict.process({"detections": _people(0)})["tracks"]) == 0
    with pytest.raises(ValueError, match="track_low_thresh"):
        tool.open({**_defaults(), "track_low_thresh": 0.7, "track_high_thresh": 0.5})


def test_closed_instance_refuses_frames_and_wrong_inputs_are_named() -> None:
    tool = PLUGIN.tool("track")
    assert tool is not None
    instance = tool.open(_defaults())
    with pytest.raises(TypeError, match="Detections"):
        instance.process({"detections": [[0, 0, 1, 1]]})
    instance.close()
    with pytest.raises(RuntimeError, match="closed"):
        instance.process({"detections": _people(0)})


def test_importing_the_plugin_does_not_import_scipy() -> None:
    code = (
        "import sys, videodag_service.plugins.bytetrack as plugin\n"
        "assert 'scipy' not in sys.modules, 'scipy imported at plugin import'\n"
        "plugin.PLUGIN.tool('track').open({})\n"
        "assert 'scipy.optimize' in sys.modules\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
