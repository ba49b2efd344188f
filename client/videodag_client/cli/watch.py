"""`videodag watch JOB`: follow a job to its end, writing its results as JSON Lines.

The watch survives dropped connections and server restarts: it reconnects and resumes after
the last frame received, so the output holds every frame once. A server already streaming its
maximum of watches is asked again after the delay it gives. A server that cannot be reached
at the start is reported at once: only a watch that got through reconnects. `--after N`
resumes a watch that an earlier command left at frame N; with the same `-o FILE`, the
`FILE.part` that command kept is continued rather than started afresh.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from videodag_client import Cancelled, FrameResult, Internal, Job, JobState, VideodagClient, VideodagError
from videodag_client.cli import _exit_codes
from videodag_client.cli._arguments import INT64_MAX, float_in_range, int_in_range, utf8_text
from videodag_client.cli._connection import connect, connection_options_parent
from videodag_client.cli._progress import bar_size, progress_wanted
from videodag_client.cli._results import JsonLinesOutput
from videodag_client.cli.run import format_summary, print_summary

# A year: far past any job, and far inside what a timed wait accepts.
_MAX_RECONNECT_WINDOW_SECONDS = 365 * 24 * 3600.0


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "watch",
        parents=[connection_options_parent()],
        help="follow a job's progress and results until it ends",
        description="Follow JOB until it ends; write its per-frame results as JSON Lines. A finished job's "
        "results are replayed.",
    )
    parser.add_argument(
        "job_id", type=utf8_text, metavar="JOB", help="the job's id, as submit printed it (or see `videodag jobs`)"
    )
    parser.add_argument(
        "--after",
        type=int_in_range(-1, INT64_MAX),
        metavar="N",
        help="only frames after frame index N (resume an earlier watch; with the same -o, its FILE.part is "
        "continued)",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write results as JSON Lines to FILE, or '-' for stdout; default: not written. A file is written "
        "as FILE.part and renamed at the end; a FIFO or device is written directly",
    )
    parser.add_argument(
        "--reconnect-window",
        type=float_in_range(0, _MAX_RECONNECT_WINDOW_SECONDS),
        default=300.0,
        metavar="SECONDS",
        help="how long to keep reconnecting after the connection drops, once connected (default 300)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(handler=watch_command)


def watch_command(args: argparse.Namespace) -> int:
    # Checked before connecting: a bad -o found after the watch would lose its results.
    output = JsonLinesOutput(args.output, resume_after=args.after)
    show_progress = progress_wanted(args.quiet, output.lands_on_stdout)
    with connect(args) as client:
        # A resume asks for the job before its .part is touched: one that does not exist, or a
        # token refused, leaves the .part as it was; and the job's stride refuses a gap before
        # any frame is written (a finished job's watch sends its frames before the job event).
        if args.after is not None:
            output.frame_stride = client.get_job(args.job_id).options.frame_stride
        with output, tqdm(desc="frames", unit="frame", file=sys.stderr, disable=not show_progress, leave=False,
                          **bar_size()) as bar:
            final = _follow(client, args, output, bar)
    if final is not None and final.summary is not None and not args.quiet:
        print_summary(format_summary(final.summary, args.output), on_stderr=output.lands_on_stdout)
    return _exit_codes.SUCCESS


def _follow(client: VideodagClient, args: argparse.Namespace, output: JsonLinesOutput, bar: tqdm) -> Job | None:
    """Writes the job's frames to `output` until the job ends; its last state. Raised inside the
    output's block when the job did not succeed, so partial results are kept as a .part file."""
    final: Job | None = None
    reconnects = ReconnectReport(quiet=args.quiet)
    with client.watch_job(
            args.job_id,
        after_frame_index=args.after,
        reconnect_window=args.reconnect_window,
        on_reconnect=reconnects,
    ) as events:
        for event in events:
            reconnects.heard_from_server()
            if isinstance(event, FrameResult):
                output.write(event)
                bar.update(1)
            else:
                output.check_for_a_gap(event.options.frame_stride)
                if event.frames_total and bar.total != event.frames_total:
                    bar.total = event.frames_total
                    bar.refresh()
                final = event
    if final is not None and final.state is not JobState.SUCCEEDED:
        raise _job_error(final)
    return final


class ReconnectReport:
    """Says on stderr why a watch reconnects, once an outage: the client tries again every few
    tenths of a second, so a server restarting for 3 s would have the same line said six times."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._last_said: str | None = None

    def __call__(self, error: VideodagError, last_frame_index: int | None) -> None:
        after = "the start" if last_frame_index is None else f"frame {last_frame_index}"
        line = f"{_why_reconnecting(error)}; resuming after {after}"
        if not self._quiet and line != self._last_said:
            tqdm.write(line, file=sys.stderr)
        self._last_said = line

    def heard_from_server(self) -> None:
        """The watch got through: a loss after this is another outage, said again."""
        self._last_said = None


def _why_reconnecting(error: VideodagError) -> str:
    """A full server is not a lost connection: say which, so nobody hunts a network fault."""
    if error.reason == "TOO_MANY_WATCHES":
        wait = "" if error.retry_after is None else f", asking again in {error.retry_after:g} s"
        return f"the server watches as many jobs as it allows ({error.reason}){wait}"
    return f"connection lost ({error.code.name})"


def _job_error(job: Job) -> VideodagError:
    if job.error is not None:
        return job.error
    if not job.state.is_finished:  # the stream ended OK on a job still going: not a cancel
        return Internal(f"the server ended the watch before job {job.id} finished (it was {job.state.name.lower()} "
                        f"after {job.frames_done} frames)", reason="WATCH_ENDED_EARLY")
    return Cancelled(f"job {job.id} was {job.state.name.lower()} after {job.frames_done} frames")
