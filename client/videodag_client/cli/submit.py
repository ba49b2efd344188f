"""`videodag submit VIDEO --pipeline ID`: upload a video as a job and print its id at once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from videodag_client import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import int_in_range, utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._json import json_text
from videodag_client.cli._progress import RunProgress, progress_wanted
from videodag_client.cli._results import OutputNotWritten
from videodag_client.cli._sampling import add_sampling_arguments, sampling_options
from videodag_client.cli._terminal import shell_command, terminal_safe
from videodag_client.cli._video_input import video_source
from videodag_client.cli.jobs import job_record


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "submit",
        parents=[connection_options_parent()],
        help="upload a video as a job; prints the job id",
        description=(
            "Upload VIDEO and queue a job running pipeline ID on it. Prints the job id as soon as the "
            "upload is stored; follow the job with `videodag watch JOB`."
        ),
    )
    parser.add_argument("video", metavar="VIDEO", help="the video file to upload, or '-' to read it from stdin")
    parser.add_argument(
        "--pipeline", required=True, type=utf8_text, metavar="ID", help="the pipeline to run (see `pipelines`)"
    )
    add_sampling_arguments(parser)
    parser.add_argument(
        "--idempotency-key",
        type=utf8_text,
        metavar="KEY",
        help="submitting the same video, pipeline and options again with the same KEY returns the first job "
        "instead of queuing the video twice; another video, pipeline or options with it is refused",
    )
    parser.add_argument(
        "--chunk-size", type=int_in_range(1, MAX_CHUNK_SIZE), default=DEFAULT_CHUNK_SIZE, metavar="BYTES",
        help=f"upload chunk size, 1 to {MAX_CHUNK_SIZE} (default {DEFAULT_CHUNK_SIZE})"
    )
    parser.add_argument(
        "--no-checksum", action="store_true", help="skip the SHA-256 pass over the file before the upload"
    )
    parser.add_argument("--json", action="store_true", help="print the whole job as JSON instead of its id")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(handler=submit_command)


def submit_command(args: argparse.Namespace) -> int:
    options = sampling_options(args)
    with connect(args) as client, RunProgress(progress_wanted(args.quiet)) as progress:
        job = client.submit_job(
            video_source(args.video),
            args.pipeline,
            options,
            idempotency_key=args.idempotency_key,
            chunk_size=args.chunk_size,
            checksum=not args.no_checksum,
            on_upload_progress=progress.upload,
        )
    job_id = terminal_safe(job.id, one_line=True)  # as a server sent it: shown, never obeyed by the terminal
    follow = f"follow it with: {watch_command(job.id)}"
    try:
        print(json_text(job_record(job), indent=2) if args.json else job_id, flush=True)
    except BrokenPipeError:  # the reader went (`| true`): the job runs, so its id must not be lost
        print(f"job {job_id} is queued; {follow}", file=sys.stderr)
        raise
    except OSError as error:  # a full disk, /dev/full: the same
        raise OutputNotWritten(f"job {job_id} is queued, but writing it to standard output failed "
                               f"({error.strerror or error}); {follow}") from None
    if not args.quiet:
        print(f"job {job_id} {job.state.name}; {follow}", file=sys.stderr)
    return _exit_codes.SUCCESS


def watch_command(job_id: str) -> str:
    """The `videodag watch` command line for a job, to paste into a shell. The id is the server's
    choice: quoted, `abc;touch /tmp/x;#` stays one argument, and after `--` one that starts with
    a dash is the job, not an option (`--output=...`)."""
    return shell_command("videodag", "watch", *(["--"] if job_id.startswith("-") else []), job_id)
