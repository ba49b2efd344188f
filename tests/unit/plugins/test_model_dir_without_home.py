"""A user with no home directory (no HOME, no passwd entry: OpenShift's arbitrary uids) still gets a server."""

from __future__ import annotations

import pwd

import pytest

from fakes.fake_plugins import params_as_loaded
from videodag_service.dag import DagPipelineService
from videodag_service.plugins.models import MODEL_DIR_ENV, ModelFileMissing, fetched_model_file


@pytest.fixture
def homeless(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)


@pytest.mark.usefixtures("homeless")
def test_a_model_without_a_home_to_look_in_is_missing_and_the_message_names_the_variable() -> None:
    with pytest.raises(ModelFileMissing, match=f"no home directory.*set {MODEL_DIR_ENV}"):
        fetched_model_file("frozen_inference_graph.pb")


@pytest.mark.usefixtures("homeless")
def test_the_built_in_pipelines_load_without_a_home() -> None:
    """It refused to start, frame_stats_v1 included: "Could not determine home directory"."""
    service = DagPipelineService.from_folder()
    assert {"frame_stats_v1", "player_tracking_v1"} <= set(service.pipeline_ids())


@pytest.mark.usefixtures("homeless")
def test_a_model_path_under_a_missing_home_is_a_parameter_problem_saying_so() -> None:
    from videodag_service.plugins.yolo import PLUGIN, _Settings

    tool = PLUGIN.tool("detect")
    assert tool is not None
    _settings, problems = _Settings.checked(params_as_loaded(tool, model_path="~/models/yolo.onnx"))
    assert any("starts with ~, and this user has no home directory" in problem for problem in problems)
