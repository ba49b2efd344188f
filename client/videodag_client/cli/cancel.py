"""`videodag cancel JOB`: stop a queued or running job; results stored so far are kept."""

from __future__ import annotations

import argparse
from typing import Any

from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._json import json_text
from videodag_client.cli._results import print_output
from videodag_client.cli._terminal import terminal_safe
from videodag_client.cli.jobs import job_record


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "cancel",
        parents=[connection_options_parent()],
        help="cancel a queued or running job",
        description="Cancel JOB. A running job stops after its current frame; its results so far are kept.",
    )
    parser.add_argument(
        "job_id", type=utf8_text, metavar="JOB", help="the job's id, as submit printed it (or see `videodag jobs`)"
    )
    parser.add_argument("--json", action="store_true", help="print the cancelled job as JSON, as `jobs show --json`")
    parser.set_defaults(handler=cancel_command)


def cancel_command(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.cancel_job(args.job_id)
    if args.json:
        print_output(json_text(job_record(job), indent=2))
    else:
        print_output(f"job {terminal_safe(job.id, one_line=True)}: {job.state.name} after {job.frames_done} frames")
    return _exit_codes.SUCCESS
