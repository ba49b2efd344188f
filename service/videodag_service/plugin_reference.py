"""`videodag-server --list-plugins`: every tool a pipeline file can name, as a pipeline's author needs it.

Pipeline files are written on the server's side, against the plugins installed there
(third-party ones included), so the reference comes from the registry the server itself
loads, never from a list kept by hand that could drift from the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from videodag_service.dag import PORT_KINDS, Param, Plugin, PluginRegistry, Port, Tool
from videodag_service.dag.spec import FRAME_FIELD_KINDS, FRAME_SOURCE

# What each frame field means; its kind comes from the table the loader checks wiring against.
FRAME_FIELDS_REFERENCE: Mapping[str, str] = {
    "image": "the decoded frame: BGR uint8 array, height x width x 3",
    "image_bytes": "the frame as JPEG bytes, encoded only when a node reads it",
    "index": "the frame's index in the video, before sampling",
    "timestamp": "seconds from the start of the video",
}

KIND_RULE = (
    "A port's [kind] is checked when pipelines load: an input takes a source of its own kind, an int "
    "also feeds a float input, an int or float a json one, and a port with no kind takes and feeds anything."
)

DETECTIONS_IN_RESULTS = (
    'Detections, as an output in a frame\'s result: a list of {"box": [x1, y1, x2, y2] (frame pixels), '
    '"score", "label"}, with "track_id" once tracked and "text" once read.'
)


def plugin_reference(registry: PluginRegistry) -> str:
    """The frame's fields, then each plugin's tools with their inputs, outputs and parameters."""
    lines = ["Frame fields, for a node's inputs:"]
    lines += [f"  {_frame_field(name):<25} {meaning}" for name, meaning in FRAME_FIELDS_REFERENCE.items()]
    lines += ["", "Port kinds:", *(f"  {kind:<10} {meaning}" for kind, meaning in PORT_KINDS.items()), KIND_RULE]
    lines += ["", DETECTIONS_IN_RESULTS]
    for name in registry.plugin_names():
        plugin = registry.plugin(name)
        assert plugin is not None
        lines += ["", *_plugin_lines(plugin)]
    return "\n".join(lines) + "\n"


def _plugin_lines(plugin: Plugin) -> list[str]:
    lines = [f"{plugin.name}: {plugin.description}"]
    for tool in plugin.tools:
        lines += _tool_lines(plugin.name, tool)
    return lines


def _tool_lines(plugin_name: str, tool: Tool) -> list[str]:
    traits = ["stateful: one instance a run, frames in order" if tool.stateful else "stateless"]
    if tool.bounded_time:
        traits.append("bounded time")
    lines = [f"  {plugin_name}.{tool.name} ({', '.join(traits)})", f"    {tool.description}"]
    lines += _section("inputs", (_port_line(port) for port in tool.inputs))
    lines += _section("outputs", (_port_line(port) for port in tool.outputs))
    lines += _section("params", (_param_line(param) for param in tool.params))
    return lines


def _section(title: str, entries: Iterable[str]) -> list[str]:
    items = list(entries)
    return [f"    {title}:", *(f"      {item}" for item in items)] if items else [f"    {title}: none"]


def _frame_field(name: str) -> str:
    return f"{FRAME_SOURCE}.{name} [{FRAME_FIELD_KINDS[name]}]"


def _port_line(port: Port) -> str:
    """`image [image]: BGR frame`; the kind and the description are left out when not declared."""
    named = f"{port.name} [{port.kind}]" if port.kind else port.name
    return f"{named}: {port.description}" if port.description else named


def _param_line(param: Param) -> str:
    """`iou_threshold (float, default 0.5, in (0, 1]): ...`; choices and bounds only when declared."""
    traits = [param.kind.__name__, "required" if param.required else f"default {_yaml_value(param.default)}"]
    if param.choices:
        traits.append(f"one of {', '.join(_yaml_value(choice) for choice in param.choices)}")
    if param.allowed_range:
        traits.append(param.allowed_range)
    meaning = f": {param.description}" if param.description else ""
    return f"{param.name} ({', '.join(traits)}){meaning}"


def _yaml_value(value: Any) -> str:
    """As the value is written in a pipeline file: JSON is valid YAML (true, null, "text", [1, 2])."""
    return json.dumps(value)
