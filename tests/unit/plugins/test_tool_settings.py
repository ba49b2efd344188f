"""A tool's settings declare its parameters (`tool_settings`), and the detectors state the box-selection
parameters they share in the same words (`box_selection`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from videodag_service.dag import Param, builtin_plugins
from videodag_service.plugins.tool_settings import params_of, setting

SHARED = ("score_threshold", "iou_threshold", "max_detections")


def test_the_fields_give_the_parameters_in_their_order() -> None:
    @dataclass(frozen=True)
    class Settings:
        scale: float = setting(Param("scale", float, 1.0, "multiplier"))
        label: str = setting(Param("label", str, "", "what the number is"))

    assert [param.name for param in params_of(Settings)] == ["scale", "label"]
    assert Settings(scale=2.0, label="seconds").scale == 2.0


def test_a_field_without_a_parameter_is_refused() -> None:
    @dataclass(frozen=True)
    class Settings:
        scale: float = setting(Param("scale", float, 1.0))
        label: str = ""

    with pytest.raises(TypeError, match=r"Settings.label declares no parameter"):
        params_of(Settings)


def test_a_field_named_otherwise_than_its_parameter_is_refused() -> None:
    @dataclass(frozen=True)
    class Settings:
        scale: float = setting(Param("factor", float, 1.0))

    with pytest.raises(TypeError, match=r"Settings.scale declares parameter 'factor'"):
        params_of(Settings)


def test_the_detectors_state_the_box_selection_parameters_alike() -> None:
    stated: dict[str, set[tuple[str, float | None]]] = {}
    for plugin in builtin_plugins():
        for tool in plugin.tools:
            for param in tool.params:
                if param.name in SHARED:
                    # hog adds what its scores mean after a ';', and raises its minimum for it.
                    stated.setdefault(param.name, set()).add((param.description.split(";")[0], param.maximum))
    assert stated == {
        "score_threshold": {("smallest detection score kept", 1)},
        "iou_threshold": {("boxes overlapping a better one of the same class by more than this IoU are dropped", 1)},
        "max_detections": {("at most this many boxes per frame, best first", 2147483647)},
    }
