"""`videodag jobs [--state STATE] [--limit N] [--json]`, `videodag jobs show JOB` and `videodag jobs delete JOB`."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from datetime import datetime
from typing import Any

from videodag_client import Job, JobState
from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import INT64_MAX, int_in_range, utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._json import json_text
from videodag_client.cli._results import print_output
from videodag_client.cli._terminal import terminal_safe

STATE_NAMES = [state.name.lower() for state in JobState if state is not JobState.UNKNOWN]


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "jobs",
        parents=[connection_options_parent()],
        help="list jobs, or show or delete one",
        description="List the server's jobs, newest first (id, state, pipeline, progress, creation time).",
        # argparse would write "ACTION ...", as if an action were required: listing takes none.
        usage="%(prog)s [options] [show JOB | delete JOB]",
    )
    parser.add_argument(
        "--state", action="append", choices=STATE_NAMES, type=str.lower,  # as listed (RUNNING) or typed (running)
        help="only jobs in this state (repeatable)",
    )
    parser.add_argument(
        "--limit", type=int_in_range(0, INT64_MAX), default=50, metavar="N",
        help="list at most N jobs (0: all; default 50)",
    )
    parser.add_argument("--json", action="store_true", help="print the jobs as JSON")
    parser.set_defaults(handler=list_command)
    actions = parser.add_subparsers(dest="jobs_command", metavar="ACTION", prog=parser.prog)
    show = actions.add_parser("show", parents=[connection_options_parent()], help="show one job")
    show.add_argument(
        "job_id", type=utf8_text, metavar="JOB", help="the job's id, as submit printed it (or see `videodag jobs`)"
    )
    # SUPPRESS: a default here would overwrite `jobs --json show JOB`.
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print it as JSON")
    show.set_defaults(handler=show_command)
    delete = actions.add_parser(
        "delete", parents=[connection_options_parent()], help="delete a finished job and its results"
    )
    delete.add_argument(
        "job_id", type=utf8_text, metavar="JOB", help="the job's id, as submit printed it (or see `videodag jobs`)"
    )
    delete.set_defaults(handler=delete_command)


def list_command(args: argparse.Namespace) -> int:
    states = [JobState[name.upper()] for name in args.state or ()]
    with connect(args) as client:
        everything = client.iter_jobs(states=states, page_size=min(args.limit + 1, 1000) if args.limit > 0 else 0)
        jobs = list(itertools.islice(everything, args.limit) if args.limit > 0 else everything)
        more = args.limit > 0 and next(everything, None) is not None
    if more:  # on stderr: the listing itself (JSON or table) stays whole
        print(f"the newest {len(jobs)} jobs; --limit 0 lists them all", file=sys.stderr)
    if args.json:
        print_output(json_text([job_record(job) for job in jobs], indent=2))
    elif jobs:
        print_output(_job_table(jobs))
    else:
        print_output("no jobs")
    return _exit_codes.SUCCESS


def show_command(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job = client.get_job(args.job_id)
    print_output(json_text(job_record(job), indent=2) if args.json else format_job(job))
    return _exit_codes.SUCCESS


def delete_command(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_job(args.job_id)
    print_output(f"deleted job {args.job_id}")
    return _exit_codes.SUCCESS


def job_record(job: Job) -> dict[str, Any]:
    """A job as plain JSON values: times in ISO 8601, the error as code, reason and message."""
    record = dataclasses.asdict(dataclasses.replace(job, error=None))
    record["state"] = job.state.name
    for key, value in record.items():
        if isinstance(value, datetime):
            record[key] = value.isoformat()
    record["error"] = (
        None if job.error is None
        else {"code": job.error.code.name, "reason": job.error.reason, "message": job.error.message}
    )
    return record


def progress_text(job: Job) -> str:
    if job.frames_total:
        return f"{job.frames_done}/{job.frames_total}"
    return str(job.frames_done)


def format_job(job: Job) -> str:
    lines = [
        f"job {job.id}: {job.state.name}" + (f" (attempt {job.attempt})" if job.attempt > 1 else ""),
        f"  pipeline:  {job.pipeline_id}",
        f"  video:     {job.file_name or '(unnamed)'}, {job.size_bytes} bytes",
        f"  frames:    {progress_text(job)}",
        f"  created:   {_local(job.created_at)}",
    ]
    if job.started_at is not None:
        lines.append(f"  started:   {_local(job.started_at)}")
    if job.ended_at is not None:
        lines.append(f"  ended:     {_local(job.ended_at)}")
    if job.expires_at is not None:
        lines.append(f"  expires:   {_local(job.expires_at)}")
    if job.idempotency_key:
        lines.append(f"  key:       {job.idempotency_key}")
    if job.error is not None:
        lines.append(f"  error:     {job.error.code.name}: {job.error.message}")
    return "\n".join(terminal_safe(line, one_line=True) for line in lines)  # a field cannot add a line


def _local(moment: datetime) -> str:
    """A time as people read it here, in the machine's time zone with its offset: the listing and
    one job's lines say a job's times alike (`--json` keeps them in UTC). A moment the zone would
    shift past year 1 or 9999, which `datetime` cannot hold (a server's first or last valid
    Timestamp), is shown in UTC, its offset saying so, rather than fail the whole listing."""
    try:
        return moment.astimezone().isoformat(sep=" ", timespec="seconds")
    except (OverflowError, OSError):  # OSError: a platform whose localtime() refuses the moment
        return moment.isoformat(sep=" ", timespec="seconds")


def _job_table(jobs: list[Job]) -> str:
    # The video's name last: names run long, and a batch's jobs are told apart by them.
    rows = [("ID", "STATE", "PIPELINE", "FRAMES", "CREATED", "VIDEO")] + [
        (terminal_safe(job.id, one_line=True), job.state.name, terminal_safe(job.pipeline_id, one_line=True),
         progress_text(job), _local(job.created_at), terminal_safe(job.file_name, one_line=True) or "-")
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
