"""`videodag-server --list-plugins`: the reference a pipeline's author writes against, from the registry itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from videodag_service.dag import (
    PORT_KINDS,
    Param,
    Plugin,
    PluginRegistry,
    PluginRegistryError,
    Port,
    Tool,
    default_registry,
    function_tool,
)
from videodag_service.dag.spec import FRAME_FIELD_KINDS, FRAME_FIELDS
from videodag_service.plugin_reference import FRAME_FIELDS_REFERENCE, plugin_reference
from videodag_service.server import main


def _nothing(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def test_the_server_prints_every_installed_tool_with_its_ports_and_params_and_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--list-plugins"]) == 0
    printed = capsys.readouterr().out
    registry = default_registry()
    for name in registry.plugin_names():
        plugin = registry.plugin(name)
        assert plugin is not None
        for tool in plugin.tools:
            section = re.split(r"\n(?=  \S|\n)", printed.split(f"\n  {name}.{tool.name} (", 1)[1], maxsplit=1)[0]
            for port in (*tool.inputs, *tool.outputs):
                named = f"{port.name} [{port.kind}]" if port.kind else port.name
                assert f"      {named}: " in section or f"      {named}\n" in section
            for param in tool.params:
                assert f"      {param.name} ({param.kind.__name__}, " in section
                if param.allowed_range:
                    assert f", {param.allowed_range}): " in section
    for field, kind in (("image", "image"), ("image_bytes", "jpeg"), ("index", "int"), ("timestamp", "float")):
        assert f"  frame.{field} [{kind}] " in printed
    for kind, meaning in PORT_KINDS.items():
        assert f"  {kind:<10} {meaning}\n" in printed


def test_every_frame_field_is_explained_with_its_kind() -> None:
    assert set(FRAME_FIELDS_REFERENCE) == set(FRAME_FIELDS) == set(FRAME_FIELD_KINDS)


def test_a_tool_reads_as_it_is_written_in_a_pipeline_file() -> None:
    tool = function_tool(
        "resize", _nothing, description="Scale the frame.",
        inputs=(Port("image", "BGR frame", kind="image"), Port("hint", "anything")), outputs=(Port("small"),),
        params=(Param("width", int, description="pixels"),
                Param("mode", str, "area", "how", choices=("area", "linear")),
                Param("keep", bool, True),
                Param("scale", float, 0.5, "of the frame", minimum=0, minimum_inclusive=False, maximum=1),
                Param("steps", int, 1, minimum=1)),
    )
    stateful = Tool("count", "Count frames.", inputs=(), outputs=(Port("n", kind="int"),), open=lambda params: None,
                    stateful=True)
    printed = plugin_reference(PluginRegistry([Plugin("shape", "Shapes.", (tool, stateful))]))
    assert "shape: Shapes.\n  shape.resize (stateless)\n    Scale the frame.\n" in printed
    assert "    inputs:\n      image [image]: BGR frame\n      hint: anything\n    outputs:\n      small\n" in printed
    assert "    outputs:\n      n [int]\n" in printed
    assert "      width (int, required): pixels\n" in printed
    assert '      mode (str, default "area", one of "area", "linear"): how\n' in printed
    assert "      keep (bool, default true)\n" in printed
    assert "      scale (float, default 0.5, in (0, 1]): of the frame\n" in printed
    assert "      steps (int, default 1, >= 1)\n" in printed
    assert "  shape.count (stateful: one instance a run, frames in order)\n" in printed
    assert "    inputs: none\n" in printed and "    params: none\n" in printed


def test_an_installed_plugin_that_cannot_load_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_registry() -> PluginRegistry:
        raise PluginRegistryError("plugin entry point 'needs_torch' could not be loaded: No module named 'torch'")

    monkeypatch.setattr("videodag_service.server.default_registry", broken_registry)
    assert main(["--list-plugins"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == (
        "videodag-server: cannot list the plugins: plugin entry point 'needs_torch' could not be loaded: "
        "No module named 'torch'\n"
    )
