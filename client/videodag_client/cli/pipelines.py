"""`videodag pipelines [--json]` and `videodag pipelines show ID [--json]`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from videodag_client import PipelineInfo
from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._json import json_text
from videodag_client.cli._results import print_output
from videodag_client.cli._terminal import terminal_safe


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "pipelines",
        parents=[connection_options_parent()],
        help="list the server's pipelines, or show one",
        description="List the pipelines the server runs (id, version, description).",
        # argparse would write "ACTION ...", as if an action were required: listing takes none.
        usage="%(prog)s [options] [show ID]",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the full pipelines, nodes included, as JSON"
    )
    parser.set_defaults(handler=list_command)
    actions = parser.add_subparsers(dest="pipelines_command", metavar="ACTION", prog=parser.prog)
    show = actions.add_parser(
        "show", parents=[connection_options_parent()], help="show one pipeline with its nodes and outputs"
    )
    show.add_argument("pipeline_id", type=utf8_text, metavar="ID")
    # SUPPRESS: a default here would overwrite `pipelines --json show ID`.
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print it as JSON")
    show.set_defaults(handler=show_command)


def list_command(args: argparse.Namespace) -> int:
    with connect(args) as client:
        pipelines = client.list_pipelines()
    if args.json:
        print_output(json_text([dataclasses.asdict(p) for p in pipelines], indent=2))
    elif pipelines:
        print_output(_pipeline_table(pipelines))
    else:
        print_output("no pipelines")
    return _exit_codes.SUCCESS


def show_command(args: argparse.Namespace) -> int:
    with connect(args) as client:
        pipeline = client.get_pipeline(args.pipeline_id)
    if args.json:
        print_output(json_text(dataclasses.asdict(pipeline), indent=2))
    else:
        print_output(format_pipeline(pipeline))
    return _exit_codes.SUCCESS


def _pipeline_table(pipelines: list[PipelineInfo]) -> str:
    rows = [("ID", "VERSION", "DESCRIPTION")] + [
        (terminal_safe(p.id, one_line=True), terminal_safe(p.version, one_line=True),
         terminal_safe(p.description, one_line=True))
        for p in pipelines
    ]
    id_width = max(len(row[0]) for row in rows)
    version_width = max(len(row[1]) for row in rows)
    return "\n".join(
        f"{pid.ljust(id_width)}  {version.ljust(version_width)}  {description}".rstrip()
        for pid, version, description in rows
    )


def format_pipeline(pipeline: PipelineInfo) -> str:
    lines = [f"{pipeline.id} (version {pipeline.version})"]
    lines += [f"  {line}" for line in pipeline.description.splitlines()]  # each line of a block description
    lines.append("nodes:")
    for node in pipeline.nodes:
        flags = [f"on_error={node.on_error}"] + (["stateful"] if node.stateful else [])
        lines.append(f"  {node.id}: {node.plugin}  [{', '.join(flags)}]")
        for node_input in node.inputs:
            lines.append(f"    {node_input.name} <- {node_input.source}")
        if node.params:
            lines.append(f"    params: {json.dumps(node.params, sort_keys=True)}")
    lines.append("outputs:")
    lines += [f"  {output.name} <- {output.source}" for output in pipeline.outputs]
    return "\n".join(terminal_safe(line, one_line=True) for line in lines)  # a field cannot add a line
